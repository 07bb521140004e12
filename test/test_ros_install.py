"""The package as ROS users get it: built by colcon in a fresh workspace, started as `ros2 run` starts it
(executable found through the ament index, environment from the workspace's setup.bash, no source tree on
sys.path), with only weights and device given, and answering on the graph."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_harness import Harness, camera_info, rgb_image

from dares_core.data.synthetic import SynthConfig

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "install", "log", "demo_out", "runs", "__pycache__",
                                     "*.egg-info", ".pytest_cache", ".gl", ".whl")


def workspace_env(workspace: Path) -> dict:
    """The environment a shell has after `source install/setup.bash` (the Fast DDS profile left unset)."""
    dump = subprocess.run(["bash", "-c", f"source {workspace}/install/setup.bash && env -0"], capture_output=True,
                          check=True, env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
    env = dict(line.split("=", 1) for line in dump.stdout.decode().split("\0") if "=" in line)
    for variable in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(variable, None)
    return env | {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("colcon_ws")
    shutil.copytree(ROOT, workspace / "src" / "dares_ros", ignore=NOT_SOURCES)
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    build = subprocess.run(["colcon", "build", "--packages-select", "dares_ros"], cwd=workspace, capture_output=True,
                           text=True, timeout=600, env=dict(os.environ, PATH=path))
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return workspace


def test_colcon_install_tree_is_complete(workspace):
    prefix = workspace / "install" / "dares_ros"
    for executable in ("dares_depth_node", "dares_odometry_node", "dares_fusion_node", "dares"):
        assert os.access(prefix / "lib" / "dares_ros" / executable, os.X_OK), executable
    share = prefix / "share" / "dares_ros"
    assert (share / "package.xml").is_file()
    assert {p.name for p in (share / "launch").iterdir()} >= {"dares.launch.py", "davinci.launch.py"}
    assert {p.name for p in (share / "config").iterdir()} >= {"dares.yaml", "dares.rviz", "fastdds_large_data.xml"}
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "dares_ros").is_file()


def test_ros2_run_starts_the_installed_node(workspace, tiny_model, tmp_path):
    weights, _ = tiny_model
    env = workspace_env(workspace)
    where = subprocess.run([sys.executable, "-c", "import dares_ros; from ament_index_python.packages import "
                            "get_package_prefix; print(get_package_prefix('dares_ros')); print(dares_ros.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    prefix = Path(where[0])
    assert prefix == workspace / "install" / "dares_ros"
    assert Path(where[1]).is_relative_to(prefix)  # the installed package, not the source tree
    namespace = f"/installed{os.getpid()}"
    log = tmp_path / "node.log"
    node = subprocess.Popen([str(prefix / "lib" / "dares_ros" / "dares_depth_node"), "--ros-args",
                             "-p", f"weights:={weights}", "-p", "device:=cpu", "-r", f"__ns:={namespace}"],
                            cwd=tmp_path, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    harness = Harness(namespace)
    try:
        cfg = SynthConfig(width=96, height=80)
        info = camera_info(cfg.intrinsics(), cfg.width, cfg.height)
        image = rgb_image(np.random.default_rng(0).integers(0, 255, (cfg.height, cfg.width, 3), dtype=np.uint8))
        assert harness.wait_for(lambda: harness.received["depth"] and harness.received["points"],
                                publish=lambda: harness.publish(image, info), timeout=90, period=0.3), log.read_text()
        assert node.poll() is None
        text = log.read_text()
        assert f"{prefix}/share/dares_ros/config/fastdds_large_data.xml" in text  # the profile found via the index
    finally:
        harness.close()
        node.send_signal(2)
        node.wait(timeout=20)
