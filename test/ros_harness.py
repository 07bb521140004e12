"""A real rclpy graph for node tests: start dares_depth_node as `ros2 run` would, publish frames, collect outputs."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dares_ros.tools.processes import node_command, stop_node  # noqa: F401  (re-exported for the tests)


def start_node(namespace: str, *params: str, log: Path, remaps: dict | None = None) -> subprocess.Popen:
    """The console entry point with the shipped params file; params as "name:=value"."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    cmd = node_command(namespace, dict(p.split(":=", 1) for p in params), remaps)
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def wait_until(predicate, timeout: float = 60.0, publish=None, period: float = 0.15) -> bool:
    """Call `publish` (if any) every `period` s until predicate() is true or `timeout` s pass; returns whether it
    became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if publish is not None:
            publish()
        time.sleep(period)
        if predicate():
            return True
    return False


def rgb_image(rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * rgb.shape[2])
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def camera_info(K: np.ndarray, width: int, height: int, baseline_m: float = 0.0,
                rectified: np.ndarray | None = None) -> CameraInfo:
    """CameraInfo with K and P = [rectified | -fx*B] (rectified: the rectified intrinsics, K when None)."""
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.k = K.ravel().tolist()
    rectified = K if rectified is None else rectified
    P = np.hstack([rectified, np.zeros((3, 1))])
    P[0, 3] = -rectified[0, 0] * baseline_m
    info.p = P.ravel().tolist()
    return info


class Harness:
    """Publishers for the node's inputs and recorders of its outputs under `namespace`."""

    def __init__(self, namespace: str):
        self.ns = namespace
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("dares_test_harness", context=self.context)
        self.lock = threading.RLock()
        self.received: dict[str, list] = {"depth": [], "info": [], "points": [], "colored": [], "diagnostics": [],
                                          "right_depth": [], "right_info": [], "right_points": [], "confidence": []}
        self.pub = {
            "left": self.node.create_publisher(Image, f"{namespace}/left/image_rect", 10),
            "right": self.node.create_publisher(Image, f"{namespace}/right/image_rect", 10),
            "left_info": self.node.create_publisher(CameraInfo, f"{namespace}/left/camera_info", 10),
            "right_info": self.node.create_publisher(CameraInfo, f"{namespace}/right/camera_info", 10),
            "left_compressed": self.node.create_publisher(CompressedImage, f"{namespace}/left/image_rect/compressed",
                                                          10),
            "camera_pose": self.node.create_publisher(PoseStamped, f"{namespace}/camera_pose", 10),
            "odom": self.node.create_publisher(Odometry, f"{namespace}/odom", 10),
            "mask": self.node.create_publisher(Image, f"{namespace}/mask", 10),
        }
        self._record("depth", Image, f"{namespace}/depth/image", 10)
        self._record("info", CameraInfo, f"{namespace}/depth/camera_info", 10)
        self._record("points", PointCloud2, f"{namespace}/points", qos_profile_sensor_data)
        self._record("colored", Image, f"{namespace}/depth/colored", 10)
        self._record("confidence", Image, f"{namespace}/depth/confidence", 10)
        self._record("right_depth", Image, f"{namespace}/right/depth/image", 10)
        self._record("right_info", CameraInfo, f"{namespace}/right/depth/camera_info", 10)
        self._record("right_points", PointCloud2, f"{namespace}/right/points", qos_profile_sensor_data)
        self._record("diagnostics", DiagnosticArray, "/diagnostics", 10)
        self.params = self.node.create_client(SetParameters, f"{namespace}/dares_depth_node/set_parameters")
        self.lifecycle = self.node.create_client(ChangeState, f"{namespace}/dares_depth_node/change_state")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _record(self, key, msg_type, topic, qos):
        def store(msg):
            with self.lock:
                self.received[key].append(msg)
        self.node.create_subscription(msg_type, topic, store, qos)

    def now(self):
        return self.node.get_clock().now().to_msg()

    def publish(self, left: Image | CompressedImage, left_info: CameraInfo | None, right: Image | None = None,
                right_info: CameraInfo | None = None, frame_id: str = "cam_left_optical",
                right_frame_id: str = "cam_right_optical"):
        """Stamp and publish one frame (infos first); returns the stamp."""
        stamp = self.now()
        left_key = "left_compressed" if isinstance(left, CompressedImage) else "left"
        for msg, key, frame in ((left_info, "left_info", frame_id), (right_info, "right_info", right_frame_id),
                                (right, "right", right_frame_id), (left, left_key, frame_id)):
            if msg is not None:
                msg.header.stamp, msg.header.frame_id = stamp, frame
                self.pub[key].publish(msg)
        return stamp

    def wait_for(self, predicate, timeout: float = 60.0, publish=None, period: float = 0.15) -> bool:
        """wait_until, reading what the recorders received under their lock."""
        def locked():
            with self.lock:
                return predicate()
        return wait_until(locked, timeout, publish, period)

    def outputs_with_stamp(self, key, stamp):
        with self.lock:
            return [m for m in self.received[key] if m.header.stamp == stamp]

    def _call(self, client, request, attempts: int = 3):
        """The service's response. A request is sent again (up to `attempts` times, 20 s each) when no response
        comes: Fast DDS may drop one sent before the client's response reader has matched ("failed to send
        response (timeout)" in the server's log, seen under load)."""
        assert client.wait_for_service(timeout_sec=30), client.srv_name
        for _ in range(attempts):
            future = client.call_async(request)
            deadline = time.monotonic() + 20
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.05)
            if future.done():
                return future.result()
            client.remove_pending_request(future)
        raise AssertionError(f"no response from {client.srv_name} to {attempts} requests")

    def set_parameter(self, name, value) -> bool:
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self._call(self.params, request).results[0].successful

    def change_state(self, transition: int) -> bool:
        """Trigger a lifecycle transition (lifecycle_msgs/Transition.TRANSITION_*) on the node."""
        return self._call(self.lifecycle, ChangeState.Request(transition=Transition(id=transition))).success

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
