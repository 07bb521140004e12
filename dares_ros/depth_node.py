"""The DARES depth node: da Vinci stereo in, REP 118 metric depth and point clouds out.

Subscribes (relative names, remap them): left/image_rect, left/camera_info, right/image_rect,
right/camera_info (`/compressed` suffixed image topics with input_transport: compressed), and for the depth
stabiliser (temporal_weight) odom (nav_msgs/Odometry, dares_odometry_node's) or camera_pose (PoseStamped, the
robot's kinematics; pose_source picks one).
Publishes: depth/image (32FC1 metres, NaN invalid), depth/camera_info, points (x y z rgb, optical frame),
depth/colored (bgr8) and /diagnostics; with eyes: both the same for the right eye under right/ (right/depth/image,
...), both eyes computed in one batch. Output headers carry the input stamp and frame_id. Outputs are reliable
(KEEP_LAST 5), so reliable and best-effort subscribers both match.

Intrinsics follow image_pipeline: rectified images (rectified: true, the default) are measured with camera_info's
P, raw ones with K. An uncalibrated camera_info (all zeros, as dVRK's placeholder) still gives depth in relative
scale, without points or stereo scale. When time goes back (a bag replayed or looped, a /clock reset), stereo
pairing starts again; a duplicate or out-of-order stamp never makes a pair.

With lifecycle: true it is a managed node (configure loads the model and creates the outputs, activate
starts processing); otherwise it configures and activates itself. The subscription callbacks only store
the newest frame; one worker thread runs the model on the latest
and drops stale frames, so latency never grows. Bad input is reported (throttled, naming the topic) and
skipped; the node keeps running.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from dares_core.errors import DaresError
from dares_core.inference import DepthPredictor, resolve_device
from dares_core.model.weights import load_depth_net
from dares_core.names import PRECISIONS, STEREO_MATCHERS, TEMPORAL_SCALE_WEIGHT, TEMPORAL_TOLERANCE
from dares_core.stereo_scale import LiveStereoScale, StereoScale
from dares_core.temporal import DepthStabiliser, stabilise_on_grid
from dares_core.timing import LatestItem, Stages

from .conversions import (
    OUTPUT_QUEUE_DEPTH,
    ConversionError,
    FrameIds,
    Uncalibrated,
    checked_intrinsics,
    compressed_to_rgb8,
    depth_outputs,
    diagnostic_array,
    image_to_rgb8,
    pose_matrix,
    read_mask,
    stamp_seconds,
    stereo_baseline,
)
from .graph import INPUT_TRANSPORTS, POSE_SOURCES, SUBSCRIPTION_QOS, run_node, subscribe_poses, subscription_qos
from .names import DEPTH_STATUS, SCALE_MODES
from .params import Param, ParamTable, Rule
from .sync import Order, StampHistory, StereoMatcher, Timeline

MM = 1e-3  # DARES depth is in nominal millimetres (trained on SCARED, 0.1-150)
LOST_IN_TRANSPORT_FIX = ("images over 512 KiB do not survive best-effort Fast DDS: start their publisher with "
                         "FASTDDS_DEFAULT_PROFILES_FILE=$(ros2 pkg prefix dares_ros)/share/dares_ros/config/"
                         "fastdds_large_data.xml (the dares launch files do), or set qos: reliable")
SUMMARY = "DARES depth node: da Vinci stereo in, REP 118 depth images and point clouds out."
DIAGNOSTICS_WINDOW_S = 5.0  # diagnostics judge what happened over this many seconds


class FrameSkipped(Exception):
    """A frame the node skips for a reason that is not a malformed message (no model, no right partner yet, too
    few stereo matches): the topic (or parameter) concerned and one line naming the problem and the fix."""

    def __init__(self, topic: str, problem: str):
        super().__init__(f"{topic}: {problem}")
        self.topic, self.problem = topic, problem


PARAMETERS = ParamTable({
    "weights": Param("", "depth checkpoint: DARES depth_model.pth, dares .safetensors, DAv2 .pth or HF folder; "
                         "set live to swap models", live=True),
    "base_weights": Param("", "Depth Anything V2 weights under an adapter-only .safetensors checkpoint"),
    "device": Param("cuda", "auto, cpu, cuda or cuda:N; cuda falls back to cpu with one warning when CUDA is absent"),
    "precision": Param("fp32", "compute precision on the device", choices=PRECISIONS),
    "compile": Param(False, "torch.compile the network at start (faster frames; ViT-S compiles in 30-40 s on a "
                            "2-core CPU; CUDA graphs on GPU)"),
    "eyes": Param("left", "left: depth of the left eye; both: of both eyes, in one batch (right outputs under right/)",
                  choices=("left", "both")),
    "input_height": Param(0, "network input height in pixels", range=(28, 2048),
                          zero_means="the size the checkpoint was trained at (256 when it records none)"),
    "input_width": Param(0, "network input width in pixels", range=(28, 2048),
                         zero_means="the size the checkpoint was trained at (320 when it records none)"),
    "min_depth": Param(0.1, "model depth range minimum (model units), as trained", range=(1e-3, 1e3)),
    "max_depth": Param(150.0, "model depth range maximum (model units), as trained", range=(1e-2, 1e5)),
    "scale_mode": Param("relative", "relative: model units read as mm; stereo: metric scale from the rectified "
                                    "pair every frame; fixed: multiply by fixed_scale", live=True,
                                    choices=SCALE_MODES),
    "fixed_scale": Param(0.001, "metres per model depth unit in fixed mode", live=True, range=(1e-9, 1e3)),
    "stereo_matcher": Param("sparse", "sparse: Lucas-Kanade matches of a grid of pixels of every frame's own pair, on "
                                      "the frame path (a few ms); sgbm: dense OpenCV SGBM maps, in a worker of its "
                                      "own at stereo_rate", choices=STEREO_MATCHERS),
    "stereo_downscale": Param(2, "stereo matching runs on images reduced by this factor", range=(1, 8)),
    "stereo_num_disparities": Param(64, "stereo disparity range at the reduced resolution (SGBM's search range; "
                                        "sparse matches beyond it are dropped)", range=(16, 512)),
    "stereo_smoothing": Param(0.3, "weight of each new stereo measurement in the running scale (log space)",
                              range=(0.01, 1.0)),
    "stereo_rate": Param(5.0, "stereo_matcher sgbm: stereo depth maps per second at most; SGBM runs in a worker "
                              "of its own on the newest pair, off the frame path (every frame folds its depth's ratio "
                              "to the newest map into the scale)",
                         range=(0.1, 1000.0), zero_means="every frame, on the frame path (deterministic replays)"),
    "stereo_max_age": Param(2.0, "seconds the newest stereo scale may be old before diagnostics warn",
                            range=(0.1, 3600.0)),
    "temporal_weight": Param(0.0, "depth stabiliser (left eye): the share of the previous output, carried into this "
                                  "frame along the optical flow and moved by the camera's motion (odom or camera_pose "
                                  "at the frame's stamp), where it agrees with the new depth within "
                                  "temporal_tolerance", live=True,
                             range=(0.01, 0.95), zero_means="off"),
    "temporal_tolerance": Param(TEMPORAL_TOLERANCE, "relative difference beyond which the new depth passes through "
                                                    "the stabiliser unchanged (moving instruments, real motion)",
                                live=True, range=(0.001, 1.0)),
    "temporal_scale_weight": Param(TEMPORAL_SCALE_WEIGHT, "how far the stabiliser pulls each frame's depth scale "
                                                          "toward the previous output's (log share) where they differ "
                                                          "by less than temporal_tolerance: holds a scale that "
                                                          "jitters between frames", live=True,
                                   range=(0.01, 0.95), zero_means="the scale is not held"),
    "pose_source": Param("any", "which camera poses the stabiliser takes: odom, camera_pose, or any (both "
                                "subscribed: publish only one, as two trajectories in frames of their own do not "
                                "line up)", choices=POSE_SOURCES),
    "temporal_use_mask": Param(False, "the stabiliser never blends the pixels that mask (mono8 or 8UC1, nonzero: "
                                      "instruments, from your segmentation) marks; each frame then also waits for "
                                      "its mask, and goes out unstabilised without one"),
    "temporal_pose_wait": Param(0.05, "seconds a frame waits for the camera pose of its stamp before it goes out "
                                      "unstabilised (the wait ends early once a newer pose came)", live=True,
                                range=(0.0, 60.0)),
    "rectified": Param(True, "the images are rectified (image_rect): intrinsics from camera_info's P, as "
                             "image_pipeline's consumers take them; false for raw images (image_raw): from K"),
    "sync_tolerance": Param(0.01, "seconds between left and right stamps for a stereo pair", range=(0.0, 1.0)),
    "point_stride": Param(4, "publish every Nth pixel in each direction in points (depth comes from the network "
                             "resolution, so 4 loses nothing at 1280x1024 and keeps clouds ~1 MB)", live=True,
                             range=(1, 64)),
    "publish_points": Param(True, "publish points (PointCloud2)", live=True),
    "publish_colored": Param(True, "publish depth/colored (bgr8 preview)", live=True),
    "qos": Param("sensor_data", "subscription QoS: sensor_data (best effort) or reliable",
                 choices=SUBSCRIPTION_QOS),
    "input_transport": Param("raw", "raw sensor_msgs/Image or compressed sensor_msgs/CompressedImage",
                             choices=INPUT_TRANSPORTS),
    "frame_id": Param("", "frame_id of the (left) outputs; empty keeps the input image's frame_id (right outputs "
                          "always keep the right image's)", live=True),
    "lifecycle": Param(False, "managed node: wait for configure/activate instead of starting at once"),
    "stand_in_network": Param(False, "benchmarks: the network replaced by a constant output of its shape, to measure "
                                     "the node's own cost per stage on any machine (depth is then meaningless)"),
}, rules=(Rule(lambda v: v["min_depth"] < v["max_depth"], "parameter min_depth must be below max_depth (the "
                                                                   "depth range the model was trained for)"),))


@dataclass
class Frame:
    """A left image (and its right partner); received: time.monotonic() when the frame was complete."""

    left: Any
    right: Any | None
    received: float


@dataclass
class EyeOutputs:
    """The publishers of one eye's outputs."""

    depth: Any
    info: Any
    points: Any
    colored: Any

    def publish(self, messages: dict) -> None:
        for key, msg in messages.items():
            getattr(self, key).publish(msg)


class DepthNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("dares_depth_node", **kwargs)
        self.parameter_error = PARAMETERS.declare(self, self._on_change)
        self._last_report: dict[tuple[str, str], float] = {}  # (topic, problem) -> when last logged
        self.last_error = ""
        self.bad_inputs = 0
        self.lost_in_transport = 0
        self.published = 0
        # what happened in the last DIAGNOSTICS_WINDOW_S (time.monotonic() of each event): what diagnostics judge
        self.recent: dict[str, deque] = {k: deque() for k in ("inputs", "right_inputs", "pairs", "published",
                                                                "problems")}
        self.latencies: deque[float] = deque(maxlen=200)  # receipt to publication, seconds
        self.stamp_ages: deque[float] = deque(maxlen=200)  # ROS clock at publication minus the image stamp
        self.scale, self.scale_confidence = float("nan"), 0.0
        self.frame_scale = 0.0  # the last published frame's scale
        self.scale_changes: deque = deque(maxlen=10000)  # (monotonic s, |log scale ratio| from the frame before)
        self.left_info: CameraInfo | None = None
        self.right_info: CameraInfo | None = None
        self.predictor: DepthPredictor | None = None
        self.active = False
        self.worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.matcher = StereoMatcher(self.p("sync_tolerance"))
        self.timeline = Timeline()
        self.frame_ids = FrameIds(self.get_logger().warning)
        self.intrinsics_source = ""  # what the last frame's intrinsics came from, for diagnostics
        self.eyes = ("left", "right") if self.p("eyes") == "both" else ("left",)
        self.last_error = self.parameter_error
        self.outputs: dict[str, EyeOutputs] = {}
        self.mailbox = LatestItem()
        self.stages = Stages(DIAGNOSTICS_WINDOW_S)  # with the device's sync once configured

        qos = subscription_qos(self.p("qos"))
        compressed = self.p("input_transport") == "compressed"
        image_type, suffix = (CompressedImage, "/compressed") if compressed else (Image, "")
        self.left_topic, self.right_topic = f"left/image_rect{suffix}", f"right/image_rect{suffix}"
        for side, topic in (("left", self.left_topic), ("right", self.right_topic)):
            lost = SubscriptionEventCallbacks(message_lost=lambda info, t=topic: self._on_message_lost(t, info))
            self.create_subscription(image_type, topic, lambda m, s=side: self._on_image(s, m), qos,
                                     event_callbacks=lost)
        self.create_subscription(CameraInfo, "left/camera_info", lambda m: setattr(self, "left_info", m), qos)
        self.create_subscription(CameraInfo, "right/camera_info", lambda m: setattr(self, "right_info", m), qos)
        self.poses = StampHistory()  # the camera's poses for the stabiliser: odometry's or the robot's
        subscribe_poses(self, self.p("pose_source"), self._on_pose, 10)
        self.masks = StampHistory(10)  # (H,W) bool, instruments: pixels the stabiliser never blends
        if self.p("temporal_use_mask"):
            self.create_subscription(Image, "mask", self._on_mask, qos)
        self.stabiliser = DepthStabiliser()
        self.stabilised_pose: np.ndarray | None = None  # the camera pose of the stabiliser's last output
        self.blended: deque = deque(maxlen=10000)  # (monotonic s, fraction of the frame blended, or NaN: none)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 5)
        self.create_timer(1.0, self._publish_diagnostics)
        if self.parameter_error and not self.p("lifecycle"):
            raise DaresError(self.parameter_error)  # a self-starting node stops: main() says why and exits 2
        if not self.p("lifecycle"):
            self.trigger_configure()
            self.trigger_activate()

    # --- lifecycle ------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.parameter_error:  # a managed node with a bad start-up parameter: restart it with a good one
            self.get_logger().error(self.parameter_error)
            return TransitionCallbackReturn.FAILURE
        error = self._load_model(self.p("weights"))
        if error and self.p("lifecycle"):
            return TransitionCallbackReturn.FAILURE  # stays unconfigured; set weights and configure again
        self.stages = Stages(DIAGNOSTICS_WINDOW_S, sync=torch.cuda.synchronize if self.predictor is not None and
                             self.predictor.device.type == "cuda" else None)
        self.stereo = LiveStereoScale(StereoScale(self.p("stereo_downscale"), self.p("stereo_num_disparities"),
                                                  smoothing=self.p("stereo_smoothing")),
                                      self.p("stereo_matcher"), self.p("stereo_rate"), self.stages)
        for eye in self.eyes:
            prefix = "right/" if eye == "right" else ""
            outputs = ((Image, "depth/image"), (CameraInfo, "depth/camera_info"), (PointCloud2, "points"),
                       (Image, "depth/colored"))
            self.outputs[eye] = EyeOutputs(*(self.create_lifecycle_publisher(t, prefix + name, OUTPUT_QUEUE_DEPTH)
                                             for t, name in outputs))
        self._stop.clear()
        self.worker = threading.Thread(target=self._work, name="dares-inference", daemon=True)
        self.worker.start()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for outputs in self.outputs.values():
            for pub in vars(outputs).values():
                self.destroy_lifecycle_publisher(pub)
        self.outputs = {}
        self.predictor = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        self._stop.set()
        if self.worker is not None:
            self.worker.join(timeout=5.0)
            self.worker = None
            self.stereo.close()

    def p(self, name: str):
        return self.get_parameter(name).value

    # --- model and parameters -------------------------------------------------------------------------
    def _model_error(self, problem: str) -> str:
        """Record and log why the model could not be loaded; returns the line."""
        self.last_error = problem
        self.get_logger().error(problem)
        return problem

    def _load_model(self, weights: str) -> str:
        """Load `weights` into a new predictor; returns "" or the error (the old model stays)."""
        if not weights:
            return self._model_error("no weights set: pass -p weights:=/path/to/depth_model.pth")
        try:
            device = resolve_device(self.p("device"), fallback=self.get_logger().warning)
        except DaresError as e:
            return self._model_error(f"device: {e}")
        try:
            net = load_depth_net(weights, base_weights=self.p("base_weights") or None)
            self.predictor = DepthPredictor(net, (self.p("input_height"), self.p("input_width")), device,
                                            self.p("precision"), self.p("min_depth"), self.p("max_depth"),
                                            compile=self.p("compile"), batch_size=len(self.eyes),
                                            stand_in=self.p("stand_in_network"))
        except Exception as e:  # DaresError names the file and the fix; anything else is still reported, not raised
            return self._model_error(f"weights: {e}" if isinstance(e, DaresError) else
                                     f"weights: {weights}: {type(e).__name__}: {e}")
        height, width = self.predictor.size
        self.get_logger().info(f"loaded {weights} ({net.config.encoder}, {net.config.mode}) on {device}, "
                               f"network input {height}x{width}")
        return ""

    def _on_change(self, param) -> str:
        """A live change the table accepted: a new `weights` swaps the model now, once configured ("" or why not)."""
        if param.name == "weights" and self.worker is not None:
            return self._load_model(param.value)
        return ""

    # --- input ----------------------------------------------------------------------------------------
    def _needs_pairs(self) -> bool:
        return self.p("scale_mode") == "stereo" or self.eyes != ("left",)

    def _on_image(self, side: str, msg) -> None:
        if not self.active:
            return
        now = time.monotonic()
        self._note("inputs" if side == "left" else "right_inputs", now)
        pairs = self._needs_pairs()
        if side == "right" and not pairs:
            return
        stamp = stamp_seconds(msg.header.stamp)
        order = self.timeline.order(side, stamp)
        if order is Order.TIME_WENT_BACK:
            self.matcher.restart()
            self.poses.clear()
            self.masks.clear()
            topic = self.left_topic if side == "left" else self.right_topic
            self.get_logger().info(self.timeline.went_back(topic, stamp, "stereo pairing starts again" if pairs else
                                                           "depth goes on"))
        if not pairs:  # every left image has its depth, whatever its stamp
            self.mailbox.put(Frame(msg, None, now))
            return
        if order in (Order.DUPLICATE, Order.OUT_OF_ORDER):  # never a pair older than the last
            return
        pair = self.matcher.add(side, stamp, msg)
        if pair is not None:
            self._note("pairs", now)
            self.mailbox.put(Frame(*pair, now))

    def _note(self, kind: str, when: float | None = None, count: int = 1) -> None:
        self.recent[kind].extend([time.monotonic() if when is None else when] * count)

    def _recent(self, kind: str) -> int:
        """How many `kind` events happened in the last DIAGNOSTICS_WINDOW_S."""
        times, start = self.recent[kind], time.monotonic() - DIAGNOSTICS_WINDOW_S
        while times and times[0] < start:
            times.popleft()
        return len(times)

    def report(self, topic: str, problem: str, skipped: bool = True) -> None:
        """A problem with a frame: one throttled error line per topic and problem (every 5 s at most); skipped: the
        frame was not published (else it was, with less: an uncalibrated camera's depth without points)."""
        self.bad_inputs += skipped
        self._note("problems")
        self.last_error = f"{topic}: {problem}"
        self._log_throttled((topic, problem), f"{topic}: {problem}" + (" (frame skipped)" if skipped else ""))

    def _on_message_lost(self, topic: str, info) -> None:
        """Messages the DDS transport reported lost (never seen by the node), with the usual cause and its fix."""
        self.lost_in_transport += info.total_count_change
        self._note("problems", count=info.total_count_change)
        self.last_error = f"{topic}: {info.total_count} messages lost in transport"
        self._log_throttled((topic, "lost"), f"{self.last_error}; {LOST_IN_TRANSPORT_FIX}")

    def _check_pairing(self) -> None:
        """Left images arrive but none finds a right partner: say why (no right image at all, or stamps apart)."""
        if not (self.active and self._needs_pairs() and self._recent("inputs") and not self._recent("pairs")):
            return
        self._note("problems")
        window = f"in the last {DIAGNOSTICS_WINDOW_S:.0f} s"
        if not self._recent("right_inputs"):
            self.last_error = (f"{self.right_topic}: no right image {window}; remap right/image_rect and "
                               "right/camera_info to the right camera, or set scale_mode: relative (and eyes: left)")
        else:
            self.last_error = (f"{self.right_topic}: right images arrive but none matched a left stamp within "
                               f"sync_tolerance {self.p('sync_tolerance')} s {window} (nearest "
                               f"{self.matcher.nearest_gap:.3f} s apart); stamp both eyes from one clock or raise "
                               "sync_tolerance")
        self._log_throttled((self.right_topic, "unpaired"), self.last_error)

    def _log_throttled(self, key: tuple[str, str], line: str) -> None:
        """Log `line` as an error unless the same key was logged in the last 5 s."""
        now = time.monotonic()
        if now - self._last_report.get(key, -1e9) >= 5.0:
            self._last_report[key] = now
            self.get_logger().error(line)

    def _to_rgb(self, msg, topic: str) -> np.ndarray:
        try:
            return compressed_to_rgb8(msg) if isinstance(msg, CompressedImage) else image_to_rgb8(msg)
        except ConversionError as e:
            raise ConversionError(e.problem, topic) from None

    # --- worker ---------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            frame = self.mailbox.take(timeout=0.1)
            if frame is None:
                continue
            try:
                with self.stages.frame():
                    self._process(frame)
            except (ConversionError, FrameSkipped) as e:
                self.report(e.topic or self.left_topic, e.problem)
            except Exception as e:  # a bug must not stop a node in an operating room: report and go on
                if not self.context.ok():
                    return  # shut down (Ctrl-C, SIGTERM) while this frame was on its way out
                self.report("dares_depth_node", f"unexpected {type(e).__name__}: {e}")

    def _process(self, frame: Frame) -> None:
        if self.predictor is None:
            raise FrameSkipped("weights", self.last_error or "no model loaded")
        left_info, right_info = self.left_info, self.right_info
        with self.stages("receive"):
            left = self._to_rgb(frame.left, self.left_topic)
            K = self._intrinsics(left_info, left, "left/camera_info")
            right = None if frame.right is None else self._right_image(frame.right, right_info, left)
            right_K = None if right is None else self._intrinsics(right_info, right, "right/camera_info")
        if self.eyes == ("left",):
            images, infos, Ks, messages = [left], [left_info], [K], [frame.left]
        elif right is None:  # eyes: both, a lone left frame queued before pairing started
            raise FrameSkipped(self.right_topic, "waiting for a right frame matching the left stamp")
        else:
            images, infos, messages = [left, right], [left_info, right_info], [frame.left, frame.right]
            Ks = [K, right_K]
        with self.stages("receive"):
            batch = torch.from_numpy(np.stack(images)) if len(images) > 1 else torch.from_numpy(left)[None]
        depth = self.predictor.predict(batch, stages=self.stages).depth  # (eyes,H,W) on the model's device
        with self.stages("stereo_scale"):
            scale = self._metric_scale(left, right, depth[0], K, right_K, right_info)
        if self.frame_scale > 0 and scale > 0:  # how much the scale moved since the last frame (log ratio)
            self.scale_changes.append((time.monotonic(), abs(math.log(scale / self.frame_scale))))
        self.frame_scale = scale
        depth = depth.float() * scale
        if self.p("temporal_weight"):
            with self.stages("temporal"):
                depth[0] = self._stabilise(depth[0], left, stamp_seconds(frame.left.header.stamp), K)
        for eye, rgb, info, eye_K, msg, eye_depth in zip(self.eyes, images, infos, Ks, messages, depth):
            header = Header(stamp=msg.header.stamp, frame_id=self._frame_id(eye, msg))
            out = depth_outputs(eye_depth, rgb, info, header, eye_K, self.p("point_stride"),
                                self.p("publish_points"), self.p("publish_colored"),
                                self.stages)  # points back-projected on device
            with self.stages("publish"):
                self.outputs[eye].publish(out)
        stamp = stamp_seconds(frame.left.header.stamp)
        self.stamp_ages.append(self.get_clock().now().nanoseconds * 1e-9 - stamp)
        self.latencies.append(time.monotonic() - frame.received)
        self._note("published")
        self.published += 1

    def _on_pose(self, header, pose) -> None:
        T = pose_matrix(pose)
        if np.isfinite(T).all():
            self.poses.add(stamp_seconds(header.stamp), T)

    def _on_mask(self, msg: Image) -> None:
        try:
            self.masks.add(stamp_seconds(msg.header.stamp), read_mask(msg))
        except ConversionError as e:
            self.report(e.topic or "mask", e.problem, skipped=False)

    def _stabilise(self, depth_m: torch.Tensor, rgb: np.ndarray, stamp: float, K: np.ndarray | None) -> torch.Tensor:
        """The left eye's depth (H,W) metres stabilised with the previous output, carried along the optical flow
        from the previous image to this one, rgb (H,W,3), and moved by the camera's motion since, never blended
        where the mask marks instruments (temporal_use_mask); unchanged (and the stabiliser restarted) without a
        pose at this stamp, intrinsics, or the mask asked for."""
        tolerance, wait = self.p("sync_tolerance"), self.p("temporal_pose_wait")
        pose = None if K is None else self.poses.at(stamp, tolerance, wait)
        mask = None
        if pose is not None and self.p("temporal_use_mask"):
            mask = self.masks.at(stamp, tolerance, wait)
            if mask is None:
                self.report("mask", "no mask at this frame's stamp (temporal_use_mask): its depth went out "
                                    "unstabilised; publish the mask with the image's stamp", skipped=False)
        if pose is None or (mask is None and self.p("temporal_use_mask")):
            self.stabiliser.reset()
            self.stabilised_pose = None
            self.blended.append((time.monotonic(), math.nan))
            return depth_m
        self.stabiliser.weight, self.stabiliser.tolerance, self.stabiliser.scale_weight = (
            self.p("temporal_weight"), self.p("temporal_tolerance"), self.p("temporal_scale_weight"))
        motion = None if self.stabilised_pose is None else np.linalg.inv(pose) @ self.stabilised_pose
        stabilised, blended = stabilise_on_grid(self.stabiliser, depth_m, rgb, K, motion, mask)
        self.stabilised_pose = pose
        self.blended.append((time.monotonic(), blended))
        return stabilised

    def _temporal(self) -> dict:
        """The stabiliser over the diagnostics window: the median % of each frame blended with the previous output,
        and the frames that went out unstabilised (no camera pose, or no mask where temporal_use_mask asks)."""
        since = time.monotonic() - DIAGNOSTICS_WINDOW_S
        recent = np.array([b for t, b in self.blended if t >= since])
        posed = recent[np.isfinite(recent)]
        return {"temporal_blended_p50_pct": f"{100 * np.median(posed):.1f}" if posed.size else "nan",
                "temporal_unstabilised_frames": str(int(np.isnan(recent).sum()))}

    def _frame_id(self, eye: str, msg) -> str:
        """frame_id names the left output frame; the right eye keeps its image's frame_id (both as tf2 takes them)."""
        return self.frame_ids((eye == "left" and self.p("frame_id")) or msg.header.frame_id)

    def _intrinsics(self, info: CameraInfo | None, image: np.ndarray, topic: str) -> np.ndarray | None:
        """(3,3) intrinsics of an eye's image (P when rectified, else K); None when its camera is uncalibrated
        (reported: its depth is still published, without points)."""
        rectified = self.p("rectified")
        try:
            K = checked_intrinsics(info, image.shape, topic, rectified)
        except Uncalibrated as e:
            self.intrinsics_source = "uncalibrated"
            self.report(topic, e.problem, skipped=False)
            return None
        self.intrinsics_source = "P (rectified)" if rectified and any(info.p) else "K"
        return K

    def _right_image(self, msg, info: CameraInfo | None, left: np.ndarray) -> np.ndarray:
        right = self._to_rgb(msg, self.right_topic)
        if right.shape != left.shape:
            raise FrameSkipped(self.right_topic, f"is {right.shape[1]}x{right.shape[0]} but left is {left.shape[1]}x"
                                                 f"{left.shape[0]}; publish a rectified pair of one size")
        return right

    def _metric_scale(self, left: np.ndarray, right: np.ndarray | None, depth: torch.Tensor, K: np.ndarray | None,
                      right_K: np.ndarray | None, right_info: CameraInfo | None) -> float:
        """Metres per model depth unit; depth: (H,W) of the left eye in model units; K, right_K: the eyes'
        intrinsics, None when uncalibrated (stereo scale then pauses: relative scale, already reported)."""
        mode = self.p("scale_mode")
        if mode == "fixed":
            return self.p("fixed_scale")
        if mode == "relative" or (right is not None and (K is None or right_K is None)):
            return MM
        if right is None:  # switched to stereo while this left frame was queued
            raise FrameSkipped(self.right_topic, "waiting for a right frame matching the left stamp")
        if not np.isfinite(self.stereo.scale_for(left, right, depth.cpu().numpy(), K[0, 0],
                                                 stereo_baseline(right_info))):  # no scale yet
            raise FrameSkipped(self.right_topic, f"too few stereo matches for a first scale "
                                                 f"({self.stereo.confidence:.0%} valid); check rectification and "
                                                 "stereo_num_disparities")
        self.scale, self.scale_confidence = self.stereo.scale, self.stereo.confidence
        if self.stereo.age() > self.p("stereo_max_age"):
            self.report(self.right_topic, f"the stereo scale is {self.stereo.age():.1f} s old (stereo_max_age "
                                          f"{self.p('stereo_max_age'):g} s): stereo matching finds too few "
                                          "matches, or SGBM is slower than stereo_rate; depth keeps the last scale",
                        skipped=False)
        return self.scale

    # --- diagnostics ----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        """Level and message judge the last DIAGNOSTICS_WINDOW_S: OK while depth is published and nothing went
        wrong, WARN while published with problems (bad or lost frames) or while no image arrives, ERROR while
        images arrive (or no model is loaded) and nothing is published."""
        self._check_pairing()
        published, problems, inputs = (self._recent(k) for k in ("published", "problems", "inputs"))
        rate = published / DIAGNOSTICS_WINDOW_S
        window = f"the last {DIAGNOSTICS_WINDOW_S:.0f} s"
        status = DiagnosticStatus(name=DEPTH_STATUS, hardware_id=self.get_fully_qualified_name())
        if self.predictor is None:
            status.level, status.message = DiagnosticStatus.ERROR, self.last_error or "no model loaded"
        elif not published and (inputs or problems):
            status.level = DiagnosticStatus.ERROR
            status.message = f"publishing nothing: {self.last_error or 'inputs arrive, no depth comes out'}"
        elif not published:
            status.level, status.message = DiagnosticStatus.WARN, f"no image on {self.left_topic} in {window}"
        elif problems:
            status.level = DiagnosticStatus.WARN
            status.message = f"publishing at {rate:.1f} Hz with {problems} problem(s) in {window}: {self.last_error}"
        else:
            status.level, status.message = DiagnosticStatus.OK, f"publishing depth at {rate:.1f} Hz"
        latency = np.array(self.latencies) if self.latencies else np.full(1, np.nan)
        stamp_age = np.median(self.stamp_ages) if self.stamp_ages else float("nan")
        values = {
            "rate_hz": f"{rate:.2f}", "latency_p50_s": f"{np.percentile(latency, 50):.4f}",
            "latency_p99_s": f"{np.percentile(latency, 99):.4f}", "stamp_age_p50_s": f"{stamp_age:.4f}",
            "published": str(self.published), "dropped_frames": str(self.mailbox.dropped),
            "bad_inputs": str(self.bad_inputs), "lost_in_transport": str(self.lost_in_transport),
            "problems_in_window": str(problems), "time_jumps_back": str(self.timeline.jumps),
            "intrinsics": self.intrinsics_source, "scale_mode": self.p("scale_mode"),
            "scale_m_per_unit": f"{self.scale:.6g}", "scale_confidence": f"{self.scale_confidence:.3f}",
            "scale_age_s": f"{self.stereo.age():.2f}" if self.worker is not None else "nan",
            **self._scale_change(),
            **self._temporal(),
            **{f"stage_{name}_ms": f"{ms:.2f}" for name, ms in self.stages.medians_ms().items()},
            "last_error": self.last_error if problems or self.predictor is None else "",
        }
        self.diag_pub.publish(diagnostic_array(status, values, self.get_clock().now().to_msg()))

    def _scale_change(self) -> dict:
        """The scale's frame-to-frame change in %, median and largest over the diagnostics window."""
        since = time.monotonic() - DIAGNOSTICS_WINDOW_S
        changes = [c for t, c in self.scale_changes if t >= since]
        if not changes:
            return {"scale_change_p50_pct": "nan", "scale_change_max_pct": "nan"}
        return {"scale_change_p50_pct": f"{100 * math.expm1(float(np.median(changes))):.3f}",
                "scale_change_max_pct": f"{100 * math.expm1(max(changes)):.3f}"}

    def destroy_node(self):
        self._stop_worker()
        return super().destroy_node()


def main(args=None) -> None:
    run_node(DepthNode, "dares_depth_node", PARAMETERS.usage("dares_depth_node", SUMMARY), args)


if __name__ == "__main__":
    main()
