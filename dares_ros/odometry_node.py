"""dares_odometry_node: the DARES pose network on consecutive left frames, as camera odometry.

Subscribes left/image_rect (remappable; left/image_rect/compressed with input_transport compressed). Each
frame and the one before go through the pose network as `dares pose` and the official evaluate_pose.py do
(frame i+1, frame i; official resize); the relative transform chains into the left camera's pose.
Publishes odom (nav_msgs/Odometry: odom_frame -> the camera's frame), path (nav_msgs/Path, the last max_path
poses), TF odom_frame -> camera (publish_tf; where tf2_msgs is importable, as in every ROS install), and
/diagnostics. When time goes back (a bag replayed or looped, a /clock reset) a new trajectory starts at the origin:
no motion is computed across the jump.

Translation is in metres: the pose network's unit is the depth network's (DARES trains them together), the
millimetres per unit its weights record (1, nominal mm, for DARES; `pose.pose_units`), so with scale_source
depth_node it is multiplied by those and by the metres per millimetre of depth the depth node reports in its
diagnostics (scale_m_per_unit: the stereo scale in scale_mode stereo); with fixed, and until the depth node
reports, by translation_scale (metres per millimetre: 0.001 takes nominal millimetres as they are).
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from dares_core.backends import parse_providers
from dares_core.errors import DaresError
from dares_core.inference import resolve_device
from dares_core.pose import PoseRunner, load_pose_net, pose_units
from dares_core.preprocess import resize_like_official, to_unit_tensor
from dares_core.reconstruct import scale_translation
from dares_core.sync import Order, Timeline

from .conversions import (
    OUTPUT_QUEUE_DEPTH,
    ConversionError,
    FrameIds,
    compressed_to_rgb8,
    diagnostic_array,
    image_to_rgb8,
    set_pose,
    stamp_seconds,
)
from .graph import INPUT_TRANSPORTS, SUBSCRIPTION_QOS, run_node, subscription_qos
from .names import DEPTH_STATUS, ODOMETRY_STATUS
from .params import Param, ParamTable, Rule, backend_params, providers_rule

SCALE_SOURCES = ("depth_node", "fixed")
INPUT_SIDE = dict(range=(28, 4096), zero_means="the size the weights were trained at, else the official")
PARAMETERS = ParamTable({
    "pose_weights": Param("", "pose network: official/AF-SfMLearner folder (pose_encoder.pth, pose.pth), a `dares "
                              "train` run folder or a `dares export --network pose` .safetensors"),
    "device": Param("cuda", "auto, cpu, cuda or cuda:N; cuda falls back to cpu with one warning when CUDA is absent"),
    "input_height": Param(0, "pose network input height (official 256)", **INPUT_SIDE),
    "input_width": Param(0, "pose network input width (official 320)", **INPUT_SIDE),
    **backend_params(),
    "scale_source": Param("depth_node", "depth_node: metres per unit from the depth node's diagnostics; fixed: "
                                        "translation_scale", choices=SCALE_SOURCES),
    "translation_scale": Param(0.001, "metres per millimetre of the pose network's translation (nominal mm) with "
                                      "scale_source fixed, and until the depth node reports a scale",
                               range=(1e-12, 1e6)),
    "depth_node": Param("/dares/dares_depth_node", "fully qualified name of the depth node whose scale is used"),
    "odom_frame": Param("odom", "frame_id of odom and path (the first camera pose is its origin)"),
    "child_frame": Param("", "child_frame_id of odom and TF; empty: the images' frame_id"),
    "publish_tf": Param(True, "publish TF odom_frame -> child_frame (turn off when the robot's TF already places the "
                              "camera, e.g. from kinematics: a frame has one parent)"),
    "max_path": Param(2000, "path keeps the last this many poses", range=(1, 10**7)),
    "qos": Param("sensor_data", "image subscription QoS: sensor_data (best effort) or reliable (every replayed frame)",
                 choices=SUBSCRIPTION_QOS),
    "input_transport": Param("raw", "raw: sensor_msgs/Image on left/image_rect; compressed: "
                                    "sensor_msgs/CompressedImage on left/image_rect/compressed",
                             choices=INPUT_TRANSPORTS),
}, rules=(Rule(lambda v: bool(v["pose_weights"]), "parameter pose_weights is empty: give the pose network (-p "
                                                   "pose_weights:=FOLDER)"), providers_rule()))
SUMMARY = "dares_odometry_node: the DARES pose network on consecutive left frames, as camera odometry."


class OdometryNode(Node):
    def __init__(self):
        super().__init__("dares_odometry_node")
        problem = PARAMETERS.declare(self)
        if problem:
            raise DaresError(problem)
        self.device = resolve_device(self.p("device"), fallback=self.get_logger().warning)
        network = load_pose_net(Path(self.p("pose_weights")))  # a bad file: one line naming it, before its units
        self.units = pose_units(Path(self.p("pose_weights")))
        self.size = (self.p("input_height") or self.units.input_size[0],
                     self.p("input_width") or self.units.input_size[1])
        self.pose_net = PoseRunner(network, self.size, self.device, self.p("backend"),
                                   parse_providers(self.p("onnx_providers")), self.p("backend_check"),
                                   say=self.get_logger().warning)
        self.previous: tuple[float, torch.Tensor] | None = None  # (stamp s, (3,h,w) in [0,1])
        self.pose = np.eye(4)  # camera-to-odom, metres
        self.timeline = Timeline()
        self.frame_ids = FrameIds(self.get_logger().warning)
        self.depth_scale: float | None = None
        self.frames, self.problems, self.problem = 0, 0, ""
        self.rates: deque = deque(maxlen=50)  # monotonic times of published poses
        self.path = PathMsg()
        self.path_poses: deque = deque(maxlen=self.p("max_path"))
        self.odom_pub = self.create_publisher(Odometry, "odom", OUTPUT_QUEUE_DEPTH)
        self.path_pub = self.create_publisher(PathMsg, "path", OUTPUT_QUEUE_DEPTH)
        self.tf_pub = self._tf_publisher() if self.p("publish_tf") else None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 5)
        compressed = self.p("input_transport") == "compressed"
        self.to_rgb8 = compressed_to_rgb8 if compressed else image_to_rgb8
        self.image_topic = "left/image_rect/compressed" if compressed else "left/image_rect"
        self.create_subscription(CompressedImage if compressed else Image, self.image_topic, self._on_image,
                                 subscription_qos(self.p("qos")))
        if self.p("scale_source") == "depth_node":
            self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"odometry from {self.p('pose_weights')} at {self.size[0]}x{self.size[1]} on "
                               f"{self.device} ({self.pose_net.backend}), scale from {self.p('scale_source')}")

    def p(self, name: str):
        return self.get_parameter(name).value

    def _tf_publisher(self):
        """TF on /tf where tf2_msgs exists (every ROS install; `make install` builds it beside the PyPI wheels),
        else None with one warning."""
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.get_logger().warning("tf2_msgs is not installed: no TF is published (odom and path are); install "
                                      "ros-$ROS_DISTRO-tf2-msgs, or set publish_tf false")
            return None
        return self.create_publisher(TFMessage, "/tf", 10)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == DEPTH_STATUS and status.hardware_id == self.p("depth_node"):
                try:
                    scale = float({kv.key: kv.value for kv in status.values}.get("scale_m_per_unit", "nan"))
                except ValueError:  # not a number: keep the last scale
                    continue
                if np.isfinite(scale) and scale > 0:
                    self.depth_scale = scale

    def scale(self) -> float:
        """Metres per pose-network unit: metres per millimetre (the depth node's, or translation_scale) times the
        network's millimetres per unit."""
        if self.p("scale_source") == "depth_node" and self.depth_scale is not None:
            return self.depth_scale * self.units.unit_mm
        return self.p("translation_scale") * self.units.unit_mm

    def _on_image(self, msg: Image | CompressedImage) -> None:
        try:
            frame = to_unit_tensor(resize_like_official(self.to_rgb8(msg), self.size))
        except ConversionError as e:
            self._note(f"{self.image_topic}: {e}")
            return
        stamp = stamp_seconds(msg.header.stamp)
        order = self.timeline.order("left", stamp)
        if order is Order.TIME_WENT_BACK:
            self.get_logger().info(self.timeline.went_back(self.image_topic, stamp, "a new trajectory starts"))
            self.previous, self.pose = None, np.eye(4)
            self.path_poses.clear()
        elif order is not Order.NEW and self.previous is not None:
            self._note(f"{self.image_topic}: stamp {stamp:.3f} s is not after the last ({self.previous[0]:.3f} s); "
                       "the frame is skipped")
            return
        previous, self.previous = self.previous, (stamp, frame)
        if previous is None:
            self._publish(msg.header)  # the origin
            return
        pair = torch.cat([frame, previous[1]])[None].to(self.device)
        T = self.pose_net(pair)[0]  # previous camera's points into this one's
        if not np.isfinite(T).all():
            self._note("the pose network gave a non-finite pose; the motion of this frame is skipped")
            return
        T = scale_translation(T, self.scale())
        self.pose = self.pose @ np.linalg.inv(T)
        self._publish(msg.header, T, stamp - previous[0])

    def _publish(self, header, T: np.ndarray | None = None, dt: float = 0.0) -> None:
        child = self.frame_ids(self.p("child_frame") or header.frame_id)
        odom = Odometry()
        odom.header.stamp, odom.child_frame_id = header.stamp, child
        odom.header.frame_id = self.frame_ids(self.p("odom_frame"))
        set_pose(odom.pose.pose, self.pose)
        if T is not None and dt > 0:  # the camera's velocity in its own frame
            motion = np.linalg.inv(T)
            odom.twist.twist.linear.x, odom.twist.twist.linear.y, odom.twist.twist.linear.z = (
                float(v) / dt for v in motion[:3, 3])
        self.odom_pub.publish(odom)
        stamped = PoseStamped(header=odom.header, pose=odom.pose.pose)
        self.path.header = odom.header
        self.path_poses.append(stamped)
        self.path.poses = list(self.path_poses)
        self.path_pub.publish(self.path)
        if self.tf_pub is not None:
            from geometry_msgs.msg import TransformStamped
            from tf2_msgs.msg import TFMessage

            tf = TransformStamped(header=odom.header, child_frame_id=child)
            p, q = odom.pose.pose.position, odom.pose.pose.orientation
            tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = p.x, p.y, p.z
            tf.transform.rotation = q
            self.tf_pub.publish(TFMessage(transforms=[tf]))
        self.frames += 1
        self.rates.append(time.monotonic())

    def _note(self, problem: str) -> None:
        self.problems += 1
        if problem != self.problem:
            self.get_logger().warning(problem, throttle_duration_sec=5.0)
        self.problem = problem

    def _publish_diagnostics(self) -> None:
        recent = [t for t in self.rates if time.monotonic() - t < 5.0]
        status = DiagnosticStatus(name=ODOMETRY_STATUS, hardware_id=self.get_fully_qualified_name())
        waiting_scale = self.p("scale_source") == "depth_node" and self.depth_scale is None
        if not recent:
            status.level, status.message = DiagnosticStatus.WARN, self.problem or f"no image on {self.image_topic}"
        elif waiting_scale:
            status.level = DiagnosticStatus.WARN
            status.message = (f"no scale from {self.p('depth_node')} yet: translation at translation_scale "
                              f"{self.p('translation_scale')} m per nominal mm")
        else:
            status.level, status.message = DiagnosticStatus.OK, f"odometry at {len(recent) / 5.0:.1f} Hz"
        values = {"frames": str(self.frames), "problems": str(self.problems), "last_problem": self.problem,
                  "time_jumps_back": str(self.timeline.jumps), "tf": "on" if self.tf_pub is not None else "off",
                  "scale_m_per_unit": f"{self.scale():.6g}", "scale_source": self.p("scale_source"),
                  "backend": self.pose_net.backend, "backend_check_rel_diff": "nan" if self.pose_net.backend_check
                  is None else f"{self.pose_net.backend_check:.2e}",
                  "odom_subscribers": str(self.odom_pub.get_subscription_count())}  # matched: they get each pose
        self.diag_pub.publish(diagnostic_array(status, values, self.get_clock().now().to_msg()))


def main(args=None) -> None:
    run_node(OdometryNode, "dares_odometry_node", PARAMETERS.usage("dares_odometry_node", SUMMARY), args)


if __name__ == "__main__":
    main()
