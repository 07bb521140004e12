"""dares_ros: DARES depth estimation for surgical robots (ament_python package, also pip-installable)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dares_ros"

# Every dependency, pinned, declared once. `ros` lists the PyPI wheels of ROS 2 Kilted for machines
# without a ROS install; in a colcon workspace these come from rosdep (package.xml) instead.
CORE = [
    "torch==2.13.0",
    "numpy==2.4.6",
    "transformers==5.24.0",
    "peft==0.21.2",
    "safetensors==0.8.0",
    "kornia==0.9.0",
    "torchmetrics==1.9.0",
    "tensorboard==2.21.0",
    "opencv-python-headless==5.0.0.93",
    "open3d==0.20.0",
    "matplotlib==3.11.2",
    "pillow==13.0.0",
    "rosbags==0.11.9",
    "mcap==1.6.0",
    "pyyaml==6.0.4",
    "tqdm==4.70.1",
]
ROS = [
    "ros-rclpy==9.1.2",
    "ros-ament-index-python==1.11.0",
    "ros-rmw-fastrtps-cpp==9.3.3",
    "ros-sensor-msgs==5.5.1",
    "ros-std-msgs==5.5.1",
    "ros-geometry-msgs==5.5.1",
    "ros-diagnostic-msgs==5.5.1",
    "ros-nav-msgs==5.5.1",
    "ros-visualization-msgs==5.5.1",
    "ros-lifecycle-msgs==2.3.0",
    "ros-rosgraph-msgs==2.3.0",
]
EXPORT = [
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
]
DEV = EXPORT + [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "hypothesis==6.170.17",
    "ruff==0.17.6",
    # colcon, to build and test the package as a ROS workspace installs it
    "colcon-core==0.21.3",
    "colcon-ros==0.5.0",
    "colcon-python-setup-py==0.2.9",
    "colcon-package-selection==0.2.10",
    "colcon-bash==0.5.0",
    "catkin_pkg==1.1.1",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="DARES self-supervised endoscopic depth (Depth Anything V2 + Vector-LoRA) with a ROS 2 node",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["dares_core", "dares_core.*", "dares_ros", "dares_ros.*"]),
    include_package_data=True,
    package_data={"dares_core": ["splits/*/*", "assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    install_requires=CORE,
    extras_require={"ros": ROS, "export": EXPORT, "dev": DEV},
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "dares = dares_core.cli:main",
            "dares_depth_node = dares_ros.depth_node:main",
            "dares_fusion_node = dares_ros.fusion_node:main",
            "dares_odometry_node = dares_ros.odometry_node:main",
        ],
        # subcommands of `dares` that live in dares_ros, so dares_core never imports ROS
        "dares.commands": ["ros = dares_ros.tools.commands:COMMANDS"],
        "dares.benchmarks": ["ros = dares_ros.tools.bench:BENCHMARKS"],
    },
)
