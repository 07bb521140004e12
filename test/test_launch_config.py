"""What can be checked of launch files, config and RViz here (launch_ros is not installable as a wheel)."""

import ast
import importlib.metadata
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from dares_ros.depth_node import PARAMETERS
from dares_ros.graph import PROFILE_VARIABLES, prepare_dds

ROOT = Path(__file__).resolve().parents[1]
NODE_OUTPUTS = {"depth/image", "depth/camera_info", "points", "depth/colored",  # dares_depth_node
                "odom", "path",  # dares_odometry_node
                "map/points", "map/mesh"}  # dares_fusion_node
NAMESPACE = "dares"


def launch_calls(path: Path, name: str):
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def keyword(call, key):
    return next((ast.literal_eval(k.value) for k in call.keywords if k.arg == key and isinstance(k.value,
                                                                                                 ast.Constant)), None)


def test_launch_files_name_existing_executables_and_files():
    entry_points = importlib.metadata.distribution("dares_ros").entry_points
    scripts = {ep.name for ep in entry_points if ep.group == "console_scripts"}
    launch_files = sorted((ROOT / "launch").glob("*.launch.py"))
    assert {p.name for p in launch_files} >= {"dares.launch.py", "davinci.launch.py"}
    for path in launch_files:
        nodes = [c for c in launch_calls(path, "Node") if keyword(c, "package") == "dares_ros"]
        assert nodes, path
        for call in nodes:
            assert keyword(call, "executable") in scripts, path
            assert keyword(call, "name") == keyword(call, "executable")
        for call in launch_calls(path, "PathJoinSubstitution"):
            parts = [e.value for e in call.args[0].elts if isinstance(e, ast.Constant)]
            if "config" in parts:
                assert (ROOT / "config" / parts[-1]).is_file(), parts


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
