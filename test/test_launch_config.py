"""What can be checked of launch files, config and RViz here (launch_ros is not installable as a wheel)."""

import ast
import importlib.metadata
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from dares_core.errors import DaresError
from dares_ros.depth_node import PARAMETERS
from dares_ros.graph import PROFILE_VARIABLES, prepare_dds
from dares_ros.launch_plan import (
    DARES_ARGUMENTS,
    DAVINCI_ARGUMENTS,
    SHIPPED_RVIZ,
    dares_plan,
    davinci_plan,
    rviz_config,
)
from dares_ros.names import RIG

ROOT = Path(__file__).resolve().parents[1]
NODE_OUTPUTS = {"depth/image", "depth/camera_info", "points", "depth/colored",  # dares_depth_node
                "odom", "path",  # dares_odometry_node
                "map/points", "map/mesh"}  # dares_fusion_node
NAMESPACE = "dares"


def test_launch_files_start_what_their_plans_say():
    """The launch files only turn dares_ros.launch_plan into actions; the plans name executables that exist."""
    scripts = {ep.name for ep in importlib.metadata.distribution("dares_ros").entry_points
               if ep.group == "console_scripts"}
    for name, (arguments, plan, call) in {
        "dares.launch.py": (DARES_ARGUMENTS, dares_plan, "launch_description(DARES_ARGUMENTS, dares_plan)"),
        "davinci.launch.py": (DAVINCI_ARGUMENTS, davinci_plan, "launch_description(DAVINCI_ARGUMENTS, davinci_plan)"),
    }.items():
        calls = [n for n in ast.walk(ast.parse((ROOT / "launch" / name).read_text())) if isinstance(n, ast.Call)]
        assert [ast.unparse(c) for c in calls] == [call]
        everything = {n: "true" for n, (d, _) in arguments.items() if d in ("true", "false")}
        for args in ({}, everything):
            nodes = plan({"weights": "w.pth", "pose_weights": "p/", **args}).nodes
            assert {n.executable for n in nodes if n.package == "dares_ros"} <= scripts
            for n in nodes:
                assert all(Path(f).is_file() for f in n.parameters if isinstance(f, str))


def davinci(**args):
    return davinci_plan({"weights": "w.pth", **args})


def nodes_by_name(plan):
    return {n.name: n for n in plan.nodes}


def test_davinci_topics_and_frames_follow_the_rig():
    plan = davinci(rig="/my_rig", odometry="true", pose_weights="p/", fusion="true")
    nodes = nodes_by_name(plan)
    assert set(nodes) == {"rectify_left", "rectify_right", "dares_depth_node", "dares_odometry_node",
                          "dares_fusion_node"}
    depth = nodes["dares_depth_node"]
    assert dict(depth.remappings) == {"left/image_rect": "/my_rig/left/image_rect",
                                      "right/image_rect": "/my_rig/right/image_rect",
                                      "left/camera_info": "/my_rig/left/camera_info",
                                      "right/camera_info": "/my_rig/right/camera_info"}
    values = depth.parameters[1]
    assert values["frame_id"] == "my_rig/left_optical" and values["rectified"] is True
    assert nodes["dares_odometry_node"].parameters[0]["child_frame"] == "my_rig/left_optical"
    assert dict(nodes["rectify_left"].remappings)["image_rect"] == "/my_rig/left/image_rect"
    rviz = yaml.safe_load(plan.rviz_config)["Visualization Manager"]
    assert rviz["Global Options"]["Fixed Frame"] == "odom"  # odometry on: the world stands still
    assert rviz["Displays"][0]["Topic"]["Value"] == "/my_rig/left/image_rect"
    without = yaml.safe_load(davinci(rig="my_rig").rviz_config)["Visualization Manager"]["Global Options"]
    assert without["Fixed Frame"] == "my_rig/left_optical"  # no odometry: RViz looks from the camera


def test_davinci_image_choices_set_the_intrinsics_rule():
    raw = nodes_by_name(davinci(rectify="false"))
    assert "rectify_left" not in raw
    assert raw["dares_depth_node"].parameters[1]["rectified"] is False
    assert dict(raw["dares_depth_node"].remappings)["left/image_rect"] == "/jhu_daVinci/left/image_raw"
    color = nodes_by_name(davinci(rectify="false", image="image_rect_color"))["dares_depth_node"]
    assert color.parameters[1]["rectified"] is True
    assert dict(color.remappings)["right/image_rect"] == "/jhu_daVinci/right/image_rect_color"
    kinematics = nodes_by_name(davinci(fusion="true", camera_pose="/ECM/camera_pose", mask="/tools"))
    fusion = kinematics["dares_fusion_node"]
    assert dict(fusion.remappings)["camera_pose"] == "/ECM/camera_pose" and fusion.parameters[0]["use_mask"]


@pytest.mark.parametrize("args, line", [
    ({"odometry": "true"}, "odometry:=true needs pose_weights"),
    ({"rectify": "true", "image": "image_raw"}, "give image:=image_rect"),
    ({"fusion": "maybe"}, "fusion:=maybe is not allowed: give true or false"),
])
def test_davinci_arguments_are_checked_before_anything_starts(args, line):
    with pytest.raises(DaresError, match=line):
        davinci(**args)
    with pytest.raises(DaresError, match="give weights:="):
        davinci_plan({})


def test_missing_packages_are_found_before_anything_starts():
    without = {"image_proc", "rviz2"}
    with pytest.raises(DaresError, match="image_proc is not installed"):
        davinci_plan({"weights": "w"}, installed=lambda p: p not in without)
    plan = davinci_plan({"weights": "w", "rectify": "false"}, installed=lambda p: p not in without)
    assert not plan.rviz_config and "rviz2 is not installed" in plan.notes[0]  # the node runs, without RViz


def test_fast_dds_profile_variable_follows_the_distro():
    assert set(davinci().environment) == {"FASTDDS_DEFAULT_PROFILES_FILE"}
    humble = davinci_plan({"weights": "w", "fastdds_profile": "/mine.xml"}, ros_distro="humble").environment
    assert humble == {"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}


def test_dares_launch_remaps_onto_a_camera_of_ours():
    depth = dares_plan({"weights": "w", "camera": "/jhu_daVinci", "image": "image_raw"}).nodes[0]
    assert dict(depth.remappings)["left/image_rect"] == "/jhu_daVinci/left/image_raw"
    assert depth.parameters[1]["rectified"] is False
    assert dares_plan({"weights": "w"}).nodes[0].remappings == []  # remap yourself


def test_shipped_rviz_config_is_the_generated_one_for_our_bags():
    assert (ROOT / "config" / "dares.rviz").read_text() == rviz_config(*SHIPPED_RVIZ)
    assert SHIPPED_RVIZ == (f"/{RIG}/left/image_raw", f"{RIG}/left_optical")


def test_config_parameters_are_exactly_the_declared_ones():
    params = yaml.safe_load((ROOT / "config" / "dares.yaml").read_text())["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert value == PARAMETERS[name].default, name


def test_rviz_shows_topics_the_node_publishes():
    rviz = yaml.safe_load((ROOT / "config" / "dares.rviz").read_text())
    topics = [d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]]
    ours = [t for t in topics if t.startswith(f"/{NAMESPACE}/")]
    assert {"/dares/points", "/dares/depth/colored", "/dares/path", "/dares/map/points", "/dares/map/mesh"} <= set(ours)
    assert all(t.removeprefix(f"/{NAMESPACE}/") in NODE_OUTPUTS for t in ours)


def test_package_xml_matches_setup():
    package = ET.parse(ROOT / "package.xml").getroot()
    assert package.get("format") == "3"
    assert package.findtext("name") == "dares_ros" == importlib.metadata.distribution("dares_ros").metadata["Name"]
    assert package.find("export/build_type").text == "ament_python"
    deps = {d.text for d in package.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "diagnostic_msgs", "nav_msgs", "visualization_msgs", "launch_ros"} <= deps
    assert (ROOT / "resource" / "dares_ros").is_file()


def test_prepare_dds_uses_the_shipped_profile_unless_one_is_set(monkeypatch, tmp_path):
    for variable in (*PROFILE_VARIABLES, "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DISTRO"):
        monkeypatch.delenv(variable, raising=False)
    shipped = prepare_dds(local_only=True)
    assert shipped == str(ROOT / "config" / "fastdds_large_data.xml")
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == shipped and "FASTRTPS_DEFAULT_PROFILES_FILE" not in os.environ
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE")
    monkeypatch.setenv("ROS_DISTRO", "humble")  # Fast DDS 2.x
    assert prepare_dds() == shipped and os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] == shipped
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE")
    segment = ET.parse(shipped).getroot().find(".//{http://www.eprosima.com}segment_size")
    assert int(segment.text) >= 16 * 2**20  # a 1280x1024 32FC1 depth image is 5 MiB
    mine = tmp_path / "mine.xml"
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(mine))
    assert prepare_dds() is None
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(mine)
