"""What the launch files start, as plain data: the nodes of davinci.launch.py and dares.launch.py from their
arguments, the environment they set and the RViz config they open. `launch` and `launch_ros` have no wheel, so
the launch files only turn this into actions and everything here is tested without them. Import-light (no rclpy).

Frames (docs/nodes.md, "Frames and TF together"): the left camera's optical frame `<rig>/left_optical` (REP 103),
the right's `<rig>/right_optical`, and `odom`, the first camera pose of dares_odometry_node, which publishes odom ->
camera.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dares_core.errors import DaresError
from dares_core.files import atomic_file

from .graph import FAST_DDS_2_DISTROS, PROFILE_VARIABLES, config_file
from .names import OUTPUT_NAMESPACE, RIG

NAMESPACE = OUTPUT_NAMESPACE.strip("/")
ODOM_FRAME = "odom"  # dares_odometry_node's odom_frame
RAW, RECTIFIED = "image_raw", "image_rect"  # image_pipeline's names of one eye's images; image_rect_color also works

# name: (default, description); a default of None makes the argument required
DAVINCI_ARGUMENTS = {
    "weights": (None, "depth checkpoint (DARES depth_model.pth, .safetensors, Depth Anything V2)"),
    "rig": (RIG, "dVRK stereo rig name: the cameras publish /<rig>/left/image_raw, /<rig>/left/camera_info, right "
                 "likewise"),
    "device": ("cuda", "cuda or cpu"),
    "scale_mode": ("stereo", "relative, stereo or fixed"),
    "eyes": ("left", "left, or both (right depth under /dares/right/)"),
    "rectify": ("true", "rectify /<rig>/*/image_raw into image_rect with image_proc's rectify_node"),
    "image": ("", "each eye's image topic the nodes read under /<rig>/<eye>/: image_rect with rectify:=true, "
                  "image_raw without; image_rect_color (rectify:=false) for a stereo_image_proc pipeline of yours"),
    "frame_id": ("", "the left camera's optical frame, of the depth outputs and odometry (default <rig>/left_optical)"),
    "rviz": ("true", "open RViz on the endoscope image, depth, points, path and map"),
    "odometry": ("false", "camera odometry from the pose network (needs pose_weights)"),
    "pose_weights": ("", "pose network: pose_encoder.pth + pose.pth folder, a dares train run or a pose .safetensors"),
    "fusion": ("false", "fuse depth over time into map/points"),
    "mesh": ("false", "with fusion: also map/mesh, the fused surface as an RViz triangle Marker"),
    "camera_pose": ("/dares/camera_pose", "PoseStamped topic the fusion may use instead of odom (e.g. kinematics)"),
    "mask": ("", "with fusion: a mask topic (mono8/8UC1, nonzero on instruments) whose pixels stay out of the map"),
    "fastdds_profile": ("", "Fast DDS profile of the started nodes (default: the package's large shared-memory "
                            "segment, config/fastdds_large_data.xml)"),
}
DARES_ARGUMENTS = {
    "weights": (None, "depth checkpoint (DARES depth_model.pth, .safetensors, Depth Anything V2)"),
    "params_file": ("", "node parameters (default: the package's config/dares.yaml)"),
    "device": ("cuda", "cuda or cpu"),
    "namespace": (NAMESPACE, "namespace of the outputs"),
    "camera": ("", "topic prefix of the inputs: <camera>/{left,right}/<image> and camera_info (e.g. /jhu_daVinci "
                   "for a bag of ours); empty: remap the node's left/image_rect, ... yourself"),
    "image": (RECTIFIED, "each eye's image topic under <camera>/<eye>/ (image_raw: raw images, measured with K)"),
    "fastdds_profile": DAVINCI_ARGUMENTS["fastdds_profile"],
}


@dataclass
class NodeSpec:
    """One node for launch_ros.actions.Node: parameters are params-file paths and dicts, remappings (from, to)."""

    package: str
    executable: str
    name: str
    namespace: str = ""
    parameters: list = field(default_factory=list)
    remappings: list = field(default_factory=list)
    arguments: list = field(default_factory=list)


@dataclass
class Plan:
    """What a launch file starts: environment variables, nodes, RViz with the config `rviz_config` (YAML text; none
    when empty) and lines to log first."""

    environment: dict
    nodes: list
    rviz_config: str = ""
    notes: list = field(default_factory=list)


def flag(args: dict, name: str) -> bool:
    value = str(args[name]).strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise DaresError(f"{name}:={args[name]} is not allowed: give true or false")
    return value in ("true", "1")


def with_defaults(args: dict, arguments: dict) -> dict:
    """The launch arguments as given, the defaults for the others; a missing required one is a DaresError."""
    out = {name: args.get(name, default) for name, (default, _) in arguments.items()}
    missing = [name for name, value in out.items() if value is None]
    if missing:
        raise DaresError(f"give {', '.join(f'{m}:=...' for m in missing)}")
    return out


def fastdds_environment(profile: str, ros_distro: str) -> dict:
    """The Fast DDS profile variable for the started nodes: the large-data profile unless one is given."""
    variable = PROFILE_VARIABLES[1] if ros_distro in FAST_DDS_2_DISTROS else PROFILE_VARIABLES[0]
    return {variable: profile or str(config_file("fastdds_large_data.xml"))}


def eye_topics(camera: str, image: str) -> list:
    """The depth node's input remappings onto `camera`'s eyes."""
    return [(f"{side}/image_rect", f"{camera}/{side}/{image}") for side in ("left", "right")] + \
           [(f"{side}/camera_info", f"{camera}/{side}/camera_info") for side in ("left", "right")]


def dares_plan(args: dict, ros_distro: str = "", installed=None) -> Plan:
    """dares.launch.py: the depth node with a params file, inputs remapped onto `camera` when given (installed:
    as davinci_plan takes it; this plan needs no other package)."""
    a = with_defaults(args, DARES_ARGUMENTS)
    depth = NodeSpec("dares_ros", "dares_depth_node", "dares_depth_node", a["namespace"],
                     [a["params_file"] or str(config_file("dares.yaml")),
                      {"weights": a["weights"], "device": a["device"], "rectified": a["image"] != RAW}],
                     eye_topics(a["camera"], a["image"]) if a["camera"] else [])
    return Plan(fastdds_environment(a["fastdds_profile"], ros_distro), [depth])


def davinci_plan(args: dict, ros_distro: str = "", installed=None) -> Plan:
    """davinci.launch.py: image_proc rectification (rectify), the depth node, odometry and fusion on request, RViz.

    installed(package) says whether a ROS package is there (ament index); every problem is found before anything
    starts, so a launch that fails leaves no process behind."""
    a = with_defaults(args, DAVINCI_ARGUMENTS)
    rectify, rviz, odometry, fusion = (flag(a, n) for n in ("rectify", "rviz", "odometry", "fusion"))
    rig = a["rig"].strip("/")
    image = a["image"] or (RECTIFIED if rectify else RAW)
    camera_frame = a["frame_id"].lstrip("/") or f"{rig}/left_optical"
    if rectify and image == RAW:
        raise DaresError("rectify:=true makes image_rect from image_raw: give image:=image_rect (or rectify:=false)")
    if odometry and not a["pose_weights"]:
        raise DaresError("odometry:=true needs pose_weights:=/path/to/pose/weights")
    installed = installed or (lambda package: True)
    if rectify and not installed("image_proc"):
        raise DaresError("image_proc is not installed: install ros-$ROS_DISTRO-image-proc, or give rectify:=false "
                         "with rectified images (image:=image_rect_color) or raw ones (image:=image_raw)")
    notes = []
    if rviz and not installed("rviz2"):
        rviz, notes = False, ["rviz2 is not installed: starting without RViz (rviz:=false says so at once)"]

    def eye(side: str, topic: str) -> str:
        return f"/{rig}/{side}/{topic}"

    nodes = [NodeSpec("image_proc", "rectify_node", f"rectify_{side}", "", [],
                      [("image", eye(side, RAW)), ("camera_info", eye(side, "camera_info")),
                       ("image_rect", eye(side, image))]) for side in ("left", "right") if rectify]
    nodes.append(NodeSpec("dares_ros", "dares_depth_node", "dares_depth_node", NAMESPACE,
                          [str(config_file("dares.yaml")),
                           {"weights": a["weights"], "device": a["device"], "scale_mode": a["scale_mode"],
                            "eyes": a["eyes"], "frame_id": camera_frame, "rectified": image != RAW}],
                          eye_topics(f"/{rig}", image)))
    if odometry:
        nodes.append(NodeSpec("dares_ros", "dares_odometry_node", "dares_odometry_node", NAMESPACE,
                              [{"pose_weights": a["pose_weights"], "device": a["device"], "child_frame": camera_frame,
                                "odom_frame": ODOM_FRAME}],
                              [("left/image_rect", eye("left", image))]))
    if fusion:
        nodes.append(NodeSpec("dares_ros", "dares_fusion_node", "dares_fusion_node", NAMESPACE,
                              [{"publish_mesh": flag(a, "mesh"), "use_mask": bool(a["mask"])}],
                              [("image", eye("left", image)), ("camera_pose", a["camera_pose"]),
                               ("mask", a["mask"] or "mask")]))
    config = ""
    if rviz:
        config = rviz_config(eye("left", image), ODOM_FRAME if odometry else camera_frame)
    return Plan(fastdds_environment(a["fastdds_profile"], ros_distro), nodes, config, notes)


def rviz_displays(image_topic: str) -> list:
    """RViz displays of the endoscope image and every output of the three nodes."""
    def display(kind: str, name: str, topic: str, reliable: bool = True, enabled: bool = True, **extra) -> dict:
        return {"Class": f"rviz_default_plugins/{kind}", "Enabled": enabled, "Name": name,
                "Topic": {"Value": topic, "Reliability Policy": "Reliable" if reliable else "Best Effort"}, **extra}

    cloud = {"Color Transformer": "RGB8", "Style": "Points", "Size (Pixels)": 2}
    return [
        display("Image", "Endoscope (left)", image_topic, reliable=False),
        display("Image", "DARES depth (colour)", f"{OUTPUT_NAMESPACE}/depth/colored"),
        display("Image", "DARES depth (32FC1 m)", f"{OUTPUT_NAMESPACE}/depth/image", enabled=False,
                **{"Normalize Range": True}),
        display("PointCloud2", "DARES points", f"{OUTPUT_NAMESPACE}/points", **cloud),
        display("Path", "DARES camera path (odometry:=true)", f"{OUTPUT_NAMESPACE}/path"),
        display("PointCloud2", "DARES fused map (fusion:=true)", f"{OUTPUT_NAMESPACE}/map/points", **cloud),
        display("Marker", "DARES fused mesh (fusion:=true mesh:=true)", f"{OUTPUT_NAMESPACE}/map/mesh"),
    ]


def rviz_config(image_topic: str, fixed_frame: str) -> str:
    """An RViz config (YAML text) showing `image_topic` and the nodes' outputs in `fixed_frame`."""
    config = {
        "Panels": [{"Class": "rviz_common/Displays", "Name": "Displays"}],
        "Visualization Manager": {
            "Class": "", "Displays": rviz_displays(image_topic),
            "Global Options": {"Fixed Frame": fixed_frame, "Frame Rate": 30},
            "Views": {"Current": {"Class": "rviz_default_plugins/Orbit", "Distance": 0.3,
                                  "Focal Point": {"X": 0, "Y": 0, "Z": 0.08}, "Pitch": -1.3, "Yaw": 4.71}},
        },
        "Window Geometry": {"Height": 900, "Width": 1500},
    }
    return yaml.safe_dump(config, sort_keys=False)


SHIPPED_RVIZ = (f"/{RIG}/left/{RAW}", f"{RIG}/left_optical")  # config/dares.rviz: our bags' left image and frame


def launch_description(arguments: dict, make_plan):
    """The LaunchDescription of a launch file: its arguments, then one OpaqueFunction that makes the plan from their
    values and starts it (a DaresError there is launch's one-line error, raised before any process starts)."""
    import hashlib
    import tempfile

    from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def start(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in arguments}
        plan = make_plan(values, os.environ.get("ROS_DISTRO", ""), _installed)
        actions = [SetEnvironmentVariable(k, v) for k, v in plan.environment.items()]
        actions += [LogInfo(msg=note) for note in plan.notes]
        actions += [Node(package=n.package, executable=n.executable, name=n.name, namespace=n.namespace,
                         parameters=n.parameters, remappings=n.remappings, arguments=n.arguments, output="screen")
                    for n in plan.nodes]
        if plan.rviz_config:  # named by its content: launches of one config share one file, none piles up
            digest = hashlib.sha1(plan.rviz_config.encode()).hexdigest()[:12]
            path = Path(tempfile.gettempdir()) / f"dares-{digest}.rviz"
            with atomic_file(path) as tmp:
                tmp.write_text(plan.rviz_config)
            actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", str(path)]))
        return actions

    declared = [DeclareLaunchArgument(name, description=text) if default is None else
                DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in arguments.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=start)])


def _installed(package: str) -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix(package)
        return True
    except PackageNotFoundError:
        return False
