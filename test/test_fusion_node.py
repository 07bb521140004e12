"""dares_fusion_node through a real ROS graph: ground-truth depth and camera poses of a synthetic sequence in,
a fused map out that lies on the true surface; bad poses are rejected without touching the map; reset clears."""

import contextlib
import os
import time

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from ros_harness import camera_info, rgb_image, wait_until
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from dares_core.data.scared import (
    gt_path,
    image_path,
    instrument_mask_path,
    read_camera_poses,
    read_gt_depth,
    read_sequence_calibration,
)
from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.preprocess import read_rgb
from dares_core.reconstruct import world_points
from dares_ros.conversions import depth_image, read_point_cloud, set_pose, uint8_image
from dares_ros.fusion_node import PARAMETERS
from dares_ros.tools.processes import node_session

VOXEL_M = 0.002
FRAMES = 6
MAX_TRIANGLES = 20000


def synthetic_sequence(out, instruments: int):
    """K (3,3) and FRAMES frames (rgb, depth mm, camera-to-world mm, instrument mask (H,W) bool) of seed 6."""
    root = generate(SynthConfig(width=160, height=128, frames=FRAMES, sequences=1, seed=6, instruments=instruments),
                    out)
    folder = sequence_folder(0)
    calibration = read_sequence_calibration(root / folder)
    poses = read_camera_poses(root / folder)
    frames = []
    for i in range(1, FRAMES + 1):
        depth_mm = read_gt_depth(gt_path(root, folder, i))
        mask = cv2.imread(str(instrument_mask_path(root, folder, i)), cv2.IMREAD_GRAYSCALE) > 0
        frames.append((read_rgb(image_path(root, folder, i)), depth_mm, poses[i], mask))
    return np.asarray(calibration["K"], float), frames


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    return synthetic_sequence(tmp_path_factory.mktemp("fusion") / "scene", instruments=0)


class Graph:
    """The fusion node started as `ros2 run` does, and a node of ours publishing its inputs."""

    def __init__(self, tmp_path, namespace, **params):
        self.ns = namespace
        params = {"voxel_size": VOXEL_M, "truncation": 4 * VOXEL_M, "publish_rate": 4.0, "max_jump": 0.05,
                  "device": "cpu", "publish_mesh": True, "max_triangles": MAX_TRIANGLES, **params}
        self.log = tmp_path / "node.log"
        self.session = contextlib.ExitStack()
        self.proc, self.node = self.session.enter_context(
            node_session(namespace, params, tmp_path, "fusion_test", executable="dares_fusion_node"))
        self.maps, self.meshes, self.diagnostics = [], [], []
        self.node.create_subscription(PointCloud2, f"{namespace}/map/points", self.maps.append, 10)
        self.node.create_subscription(Marker, f"{namespace}/map/mesh", self.meshes.append, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)
        self.pubs = {name: self.node.create_publisher(kind, f"{namespace}/{name}", 10) for name, kind in (
            ("depth/image", Image), ("depth/camera_info", CameraInfo), ("camera_pose", PoseStamped),
            ("image", Image), ("mask", Image), ("odom", Odometry), ("depth/confidence", Image))}
        self.params = self.node.create_client(SetParameters, f"{namespace}/dares_fusion_node/set_parameters")
        assert wait_until(lambda: all(p.get_subscription_count() for name, p in self.pubs.items()
                                      if name not in ("odom", "depth/confidence")), 30), \
            self.log.read_text()
        time.sleep(1.0)  # DDS matches each direction apart: the node's best-effort readers may not have our writers
        # yet, and a first depth image lost then would change the counts the tests read

    def _diagnostics(self, msg):
        for status in msg.status:
            if status.name == "dares_fusion_node: map" and status.hardware_id.startswith(self.ns):
                self.diagnostics.append({kv.key: kv.value for kv in status.values} | {"message": status.message})

    def publish(self, i, rgb, depth_mm, T_mm, K, mask=None, odometry_shift_mm=None, confidence=None):
        """Frame i's inputs; odometry_shift_mm: also odom first, at the same stamp, the pose shifted that far along
        x (another trajectory, as an odometry node's origin makes it); confidence (H,W) in [0,1]: depth/confidence."""
        stamp = rclpy.time.Time(seconds=100 + i).to_msg()
        info = camera_info(K, depth_mm.shape[1], depth_mm.shape[0])
        pose = PoseStamped()
        set_pose(pose.pose, T_mm, unit=1e-3)
        depth = depth_image(np.where(depth_mm > 0, depth_mm / 1000, np.nan), Header())
        messages = [("depth/camera_info", info), ("image", rgb_image(rgb)), ("camera_pose", pose)]
        if odometry_shift_mm is not None:
            odom = Odometry()
            set_pose(odom.pose.pose, T_mm + np.pad([[odometry_shift_mm], [0], [0]], ((0, 1), (3, 0))), unit=1e-3)
            messages.insert(0, ("odom", odom))
        if mask is not None:
            messages.append(("mask", uint8_image(mask.astype(np.uint8) * 255, "mono8")))
        if confidence is not None:
            messages.append(("depth/confidence", depth_image(confidence, Header())))
        for name, msg in messages + [("depth/image", depth)]:
            msg.header.stamp, msg.header.frame_id = stamp, {"camera_pose": "world", "odom": "odom"}.get(name, "cam")
            self.pubs[name].publish(msg)
        time.sleep(0.15)

    def counts(self):
        return self.diagnostics[-1] if self.diagnostics else {}

    def set_parameter(self, name, value):
        assert self.params.wait_for_service(timeout_sec=30)
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        future = self.params.call_async(request)
        assert wait_until(future.done, 30)
        return future.result().results[0].successful

    def close(self):
        self.session.close()


def test_fused_map_lies_on_the_true_surface_and_bad_poses_do_not_reach_it(sequence, tmp_path):
    K, frames = sequence
    graph = Graph(tmp_path, f"/fusion{os.getpid()}", pose_source="camera_pose")
    try:
        for i, (rgb, depth_mm, T_mm, _) in enumerate(frames):  # odometry too, 100 mm off, first: not fused
            graph.publish(i, rgb, depth_mm, T_mm, K, odometry_shift_mm=100.0)
        assert wait_until(lambda: graph.counts().get("fused") == str(FRAMES)), (graph.counts(), graph.log.read_text())
        assert graph.counts()["rejected_poses"] == "0"
        assert wait_until(lambda: graph.maps and graph.maps[-1].header.stamp.sec == 100 + FRAMES - 1)
        points, colours = (a.reshape(-1, 3) for a in read_point_cloud(graph.maps[-1]))
        assert graph.maps[-1].header.frame_id == "world" and len(points) > 500
        truth = np.concatenate([world_points(d, K, T, stride=2) for _, d, T, _ in frames]) / 1000
        distances = _nearest(points, truth)
        assert np.median(distances) < VOXEL_M and np.percentile(distances, 95) < 2 * VOXEL_M
        assert colours.std() > 5  # coloured from the images, not the uniform grey of an uncoloured map
        # its own cost, stage by stage, as the depth node's
        assert wait_until(lambda: {"stage_integrate_ms", "stage_map_ms", "stage_publish_ms"} <= graph.counts().keys())
        assert all(float(graph.counts()[f"stage_{name}_ms"]) > 0 for name in ("integrate", "map", "publish"))
        # the same surface as triangles for RViz, bounded, in the same frame
        assert wait_until(lambda: graph.meshes and graph.meshes[-1].header.stamp.sec == 100 + FRAMES - 1)
        mesh = graph.meshes[-1]
        assert mesh.type == Marker.TRIANGLE_LIST and mesh.header.frame_id == "world"
        assert 300 < len(mesh.points) <= 3 * MAX_TRIANGLES and len(mesh.points) % 3 == 0
        assert len(mesh.colors) == len(mesh.points)
        corners = np.array([(q.x, q.y, q.z) for q in mesh.points])
        assert np.median(_nearest(corners, truth)) < VOXEL_M

        rgb, depth_mm, T_mm, _ = frames[-1]
        bad = T_mm.copy()
        bad[0, 3] += 200.0  # 200 mm jump
        graph.publish(FRAMES, rgb, depth_mm, bad, K)
        graph.publish(FRAMES + 1, rgb, depth_mm, np.full((4, 4), np.nan), K)
        assert wait_until(lambda: graph.counts().get("rejected_poses") == "2"), graph.counts()
        assert graph.counts()["fused"] == str(FRAMES) and "rejected" in graph.counts()["last_problem"]

        wrong = depth_image(np.zeros((4, 4)), Header(frame_id="cam"))
        wrong.encoding = "16UC1"
        graph.pubs["depth/image"].publish(wrong)
        assert wait_until(lambda: graph.counts().get("bad_inputs") == "1"), graph.counts()
        assert "publish 32FC1 metres" in graph.counts()["last_problem"]

        assert graph.set_parameter("reset", True)
        assert wait_until(lambda: graph.counts().get("fused") == "0"), (graph.counts(), graph.log.read_text())
        assert wait_until(lambda: graph.meshes[-1].action == Marker.DELETE)  # displays clear with the map
        assert not graph.set_parameter("voxel_size", 0.01)  # applies at start only
        assert not graph.set_parameter("max_jump", -1.0)
        assert graph.proc.poll() is None
    finally:
        graph.close()


def test_a_full_map_refuses_frames_within_its_memory_bound(sequence, tmp_path):
    """max_map_mib bounds the grid's memory: a frame that needs more room is not fused, the diagnostics say so
    and how much the map takes; raising the bound live lets frames in again."""
    K, frames = sequence
    graph = Graph(tmp_path, f"/full{os.getpid()}", max_map_mib=1.0)  # 12 blocks of 16^3 voxels; a frame needs ~25
    try:
        for i, (rgb, depth_mm, T_mm, _) in enumerate(frames[:3]):
            graph.publish(i, rgb, depth_mm, T_mm, K)
        assert wait_until(lambda: graph.counts().get("map_full") == "3"), (graph.counts(), graph.log.read_text())
        assert graph.counts()["fused"] == "0" and float(graph.counts()["map_mib"]) <= 1.0
        assert "the map is full" in graph.counts()["last_problem"] and "max_map_mib" in graph.counts()["last_problem"]
        assert graph.set_parameter("max_map_mib", 64.0)
        for i, (rgb, depth_mm, T_mm, _) in enumerate(frames[3:], start=3):
            graph.publish(i, rgb, depth_mm, T_mm, K)
        assert wait_until(lambda: graph.counts().get("fused") == str(FRAMES - 3)), graph.counts()
        assert 1.0 < float(graph.counts()["map_mib"]) <= 64.0
        assert graph.proc.poll() is None
    finally:
        graph.close()


@pytest.mark.parametrize("leave_out", ["mask", "depth/confidence"])
def test_masked_instruments_stay_out_of_the_map(tmp_path, leave_out):
    """Two instruments move through the view (17 % of the pixels): with use_mask and their masks (or min_confidence
    and a depth/confidence low on them), the map is the tissue alone (unmasked, a tenth of it lies beyond 4 mm of
    the tissue, seed 6 measured 8.8 %); a depth image whose mask (confidence) does not come is not fused, nor one
    with a mask (confidence) of another size. Reliable subscriptions here (qos, as dares demo runs it)."""
    K, frames = synthetic_sequence(tmp_path / "scene", instruments=2)
    params = {"use_mask": True} if leave_out == "mask" else {"min_confidence": 0.5}
    graph = Graph(tmp_path, f"/masked{os.getpid()}", qos="reliable", **params)

    def publish(i, rgb, depth_mm, T_mm, mask=None):
        if leave_out == "mask" or mask is None:
            graph.publish(i, rgb, depth_mm, T_mm, K, mask)
        else:
            graph.publish(i, rgb, depth_mm, T_mm, K, confidence=np.where(mask, 0.2, 0.8).astype(np.float32))

    try:
        rgb, depth_mm, T_mm, mask = frames[0]
        publish(0, rgb, depth_mm, T_mm)  # no mask: waits for it, then is dropped once newer masks come
        publish(1, rgb, depth_mm, T_mm, cv2.resize(mask.astype(np.uint8), (8, 8)).astype(bool))
        for i, (rgb, depth_mm, T_mm, mask) in enumerate(frames):
            publish(2 + i, rgb, depth_mm, T_mm, mask)
        assert wait_until(lambda: graph.counts().get("fused") == str(FRAMES)), (graph.counts(), graph.log.read_text())
        assert graph.counts()["unmatched_depth"] == "1" and graph.counts()["bad_inputs"] == "1", graph.counts()
        assert f"has no {leave_out} within sync_tolerance" in graph.log.read_text()  # the log throttles the next
        assert f"publish the {leave_out} at the depth's size" in graph.counts()["last_problem"]
        assert wait_until(lambda: graph.maps and graph.maps[-1].header.stamp.sec == 100 + 1 + FRAMES)
        points = read_point_cloud(graph.maps[-1])[0].reshape(-1, 3)
        tissue = np.concatenate([world_points(np.where(m, np.nan, d), K, T, stride=2) for _, d, T, m in frames])
        distances = _nearest(points, tissue / 1000)
        assert len(points) > 500 and np.percentile(distances, 95) < 2 * VOXEL_M and (distances > 0.004).mean() < 0.01
    finally:
        graph.close()


def _nearest(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance of each point (N,3) to its nearest reference point (M,3)."""
    import open3d as o3d

    def cloud(p):
        return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(p, np.float64)))
    return np.asarray(cloud(points).compute_point_cloud_distance(cloud(reference)))


def test_a_bad_choice_is_one_line_naming_the_choices():
    def problem(name, value):
        return PARAMETERS[name].problem(name, value)

    assert problem("qos", "fast") == "parameter qos: 'fast' is not allowed: give one of sensor_data, reliable"
    assert problem("device", "tpu") == "parameter device: 'tpu' is not allowed: give one of auto, cpu, cuda"
    assert problem("pose_source", "tf") == \
        "parameter pose_source: 'tf' is not allowed: give one of any, odom, camera_pose"
    assert problem("qos", "reliable") == problem("device", "cpu") == ""
