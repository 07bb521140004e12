"""The DARES depth node: da Vinci stereo in, REP 118 metric depth and point clouds out.

Subscribes (relative names, remap them): left/image_rect, left/camera_info, right/image_rect, right/camera_info
(`/compressed` suffixed image topics with input_transport: compressed), and for the depth stabiliser (temporal_weight)
odom (nav_msgs/Odometry, dares_odometry_node's) or camera_pose (PoseStamped, the robot's kinematics; pose_source picks
one). Publishes: depth/image (32FC1 metres, NaN invalid), depth/camera_info, points (x y z rgb, optical frame),
depth/colored (bgr8), depth/confidence (32FC1 in [0,1]) and /diagnostics; with eyes: both the same for the right eye
under right/ (right/depth/image, ...), both eyes computed in one batch. Output headers carry the input stamp and
frame_id. Outputs are reliable (KEEP_LAST 5), so reliable and best-effort subscribers both match.

Intrinsics follow image_pipeline: rectified images (rectified: true, the default) are measured with camera_info's
P, raw ones with K. An uncalibrated camera_info (all zeros, as dVRK's placeholder) still gives depth in relative
scale, without points or stereo scale. When time goes back (a bag replayed or looped, a /clock reset), stereo
pairing starts again; a duplicate or out-of-order stamp never makes a pair.

The frame's work (intrinsics, the network, metric scale, the stabiliser, points and preview) is
dares_core.pipeline.DepthPipeline; this node is its rclpy shell: parameters, subscriptions and stereo pairing,
publishing, lifecycle and diagnostics.

With lifecycle: true it is a managed node (configure loads the model and creates the outputs, activate
starts processing); otherwise it configures and activates itself. The subscription callbacks only store
the newest frame; one worker thread runs the model on the latest
and drops stale frames, so latency never grows. Bad input is reported (throttled, naming the topic) and
skipped; the node keeps running.
"""

from __future__ import annotations

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

from dares_core.backends import parse_providers
from dares_core.errors import DaresError, FrameProblem
from dares_core.inference import DepthPredictor, resolve_device
from dares_core.model.weights import load_depth_net
from dares_core.names import PRECISIONS, STEREO_MATCHERS, TEMPORAL_SCALE_WEIGHT, TEMPORAL_TOLERANCE
from dares_core.pipeline import STEREO_SETTINGS as STEREO
from dares_core.pipeline import DepthPipeline, FrameIn, Stabilise
from dares_core.sync import Order, StereoMatcher, Timeline
from dares_core.timing import Events, LatestItem, Stages

from .conversions import (
    OUTPUT_QUEUE_DEPTH,
    ConversionError,
    FrameIds,
    camera,
    diagnostic_array,
    output_messages,
    pose_matrix,
    read_mask,
    stamp_seconds,
    to_rgb8,
)
from .graph import INPUT_TRANSPORTS, POSE_SOURCES, SUBSCRIPTION_QOS, run_node, subscribe_poses, subscription_qos
from .names import DEPTH_STATUS, SCALE_MODES
from .params import Param, ParamTable, Rule, backend_params, providers_rule

LOST_IN_TRANSPORT_FIX = ("images over 512 KiB do not survive best-effort Fast DDS: start their publisher with "
                         "FASTDDS_DEFAULT_PROFILES_FILE=$(ros2 pkg prefix dares_ros)/share/dares_ros/config/"
                         "fastdds_large_data.xml (the dares launch files do), or set qos: reliable")
LOST_RELIABLE = ("with qos reliable, a message no subscriber could read (an empty or corrupt payload: check what "
                 "publishes it; the good ones behind it wait until the transport gives it up), or a publisher that "
                 "dropped them")
SUMMARY = "DARES depth node: da Vinci stereo in, REP 118 depth images and point clouds out."
DIAGNOSTICS_WINDOW_S = 5.0  # diagnostics judge what happened over this many seconds
IDLE_PIPELINE = {"backend": "", "backend_check_rel_diff": "nan", "intrinsics": "", "scale_m_per_unit": "nan",
                 "scale_confidence": "0.000", "scale_age_s": "nan", "scale_matcher": "", "scale_fallbacks": "0",
                 "scale_change_p50_pct": "nan",
                 "scale_change_max_pct": "nan"}  # diagnostics before configure


PARAMETERS = ParamTable({
    "weights": Param("", "depth checkpoint: DARES depth_model.pth, dares .safetensors, DAv2 .pth or HF folder; "
                         "set live to swap models", live=True),
    "base_weights": Param("", "Depth Anything V2 weights under an adapter-only .safetensors checkpoint"),
    "device": Param("cuda", "auto, cpu, cuda or cuda:N; cuda falls back to cpu with one warning when CUDA is absent"),
    "precision": Param("fp32", "compute precision on the device", choices=PRECISIONS),
    **backend_params(),
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
    "stereo_matcher": Param(STEREO["stereo_matcher"], "sparse: Lucas-Kanade matches of a grid of pixels of every "
                            "frame's own pair, on the frame path (a few ms); sgbm: dense OpenCV SGBM maps, in a "
                            "worker of its own at stereo_rate", choices=STEREO_MATCHERS),
    "stereo_downscale": Param(STEREO["stereo_downscale"], "stereo matching runs on images reduced by this factor",
                              range=(1, 8)),
    "stereo_num_disparities": Param(STEREO["stereo_num_disparities"], "stereo disparity range at the reduced "
                                    "resolution (SGBM's search range; sparse matches beyond it are dropped)",
                                    range=(16, 512)),
    "stereo_smoothing": Param(STEREO["stereo_smoothing"], "weight of each new stereo measurement in the running "
                              "scale (log space)", range=(0.01, 1.0)),
    "stereo_rate": Param(STEREO["stereo_rate"], "stereo_matcher sgbm: stereo depth maps per second at most; SGBM "
                         "runs in a worker of its own on the newest pair, off the frame path (every frame folds its "
                         "depth's ratio to the newest map into the scale)",
                         range=(0.1, 1000.0), zero_means="every frame, on the frame path (deterministic replays)"),
    "stereo_max_age": Param(STEREO["stereo_max_age"], "seconds the newest stereo scale may be old before diagnostics "
                            "warn", range=(0.1, 3600.0)),
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
    "publish_confidence": Param(True, "publish depth/confidence (32FC1 in [0,1], higher more trusted: depth edges, "
                                      "and in stereo mode the right image warped by the depth; docs/confidence.md)",
                                live=True),
    "min_confidence": Param(0.0, "points leaves out pixels whose confidence is below this (0: none left out)",
                            live=True, range=(0.0, 1.0)),
    "confidence_photometric": Param(False, "in stereo scale mode, the confidence also judges the depth by the other "
                                           "eye's image warped onto it (lower where one eye sees a smudge, smoke or "
                                           "a highlight; no better on average, about 4x the cost)", live=True),
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
                                                                   "depth range the model was trained for)"),
          providers_rule()))


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
    confidence: Any

    def publish(self, messages: dict) -> None:
        for key, msg in messages.items():
            getattr(self, key).publish(msg)


class DepthNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("dares_depth_node", **kwargs)
        self.parameter_error = PARAMETERS.declare(self, self._on_change)
        self._last_report: dict[tuple[str, str], float] = {}  # (topic, problem) -> when last logged
        self.bad_inputs = self.lost_in_transport = self.published = 0
        self.events = Events(DIAGNOSTICS_WINDOW_S)  # inputs, right_inputs, pairs, published, problems: diagnostics
        self.latencies: deque[float] = deque(maxlen=200)  # receipt to publication, seconds
        self.stamp_ages: deque[float] = deque(maxlen=200)  # ROS clock at publication minus the image stamp
        self.left_info: CameraInfo | None = None
        self.right_info: CameraInfo | None = None
        self.predictor: DepthPredictor | None = None
        self.pipeline: DepthPipeline | None = None  # made on configure
        self.active, self.worker = False, None
        self._stop = threading.Event()
        self.matcher = StereoMatcher(self.p("sync_tolerance"))
        self.timeline = Timeline()
        self.frame_ids = FrameIds(self.get_logger().warning)
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
        self.stabilise = Stabilise(self.p, self.report)  # its pose and mask histories fill from here on
        subscribe_poses(self, self.p("pose_source"), self._on_pose, 10)
        if self.p("temporal_use_mask"):
            self.create_subscription(Image, "mask", self._on_mask, qos)
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
        self.pipeline = DepthPipeline(self.predictor, self.eyes, self.p, self.report, self.stages, self.stabilise,
                                      self.right_topic)
        for eye in self.eyes:
            prefix = "right/" if eye == "right" else ""
            outputs = ((Image, "depth/image"), (CameraInfo, "depth/camera_info"), (PointCloud2, "points"),
                       (Image, "depth/colored"), (Image, "depth/confidence"))
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
        self.predictor = self.pipeline = None
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
            if self.pipeline is not None:
                self.pipeline.close()

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
            predictor = DepthPredictor(net, (self.p("input_height"), self.p("input_width")), device,
                                       self.p("precision"), self.p("min_depth"), self.p("max_depth"),
                                       compile=self.p("compile"), batch_size=len(self.eyes),
                                       stand_in=self.p("stand_in_network"), backend=self.p("backend"),
                                       providers=parse_providers(self.p("onnx_providers")),
                                       check=self.p("backend_check"), say=self.get_logger().warning)
        except Exception as e:  # DaresError names the file and the fix; anything else is still reported, not raised
            return self._model_error(f"weights: {e}" if isinstance(e, DaresError) else
                                     f"weights: {weights}: {type(e).__name__}: {e}")
        self.predictor = predictor
        if self.pipeline is not None:  # swapped live: the next frame takes it
            self.pipeline.predictor = predictor
        height, width = predictor.size
        self.get_logger().info(f"loaded {weights} ({net.config.encoder}, {net.config.mode}) on {device}, "
                               f"network input {height}x{width}, backend {predictor.backend}")
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
        self.events.note("inputs" if side == "left" else "right_inputs", now)
        pairs = self._needs_pairs()
        if side == "right" and not pairs:
            return
        stamp = stamp_seconds(msg.header.stamp)
        order = self.timeline.order(side, stamp)
        if order is Order.TIME_WENT_BACK:
            self.matcher.restart()
            self.stabilise.poses.clear()
            self.stabilise.masks.clear()
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
            self.events.note("pairs", now)
            self.mailbox.put(Frame(*pair, now))

    def report(self, topic: str, problem: str, skipped: bool = True) -> None:
        """A problem with a frame: one throttled error line per topic and problem (every 5 s at most); skipped: the
        frame was not published (else it was, with less: an uncalibrated camera's depth without points)."""
        self.bad_inputs += skipped
        self.events.note("problems")
        self.last_error = f"{topic}: {problem}"
        self._log_throttled((topic, problem), f"{topic}: {problem}" + (" (frame skipped)" if skipped else ""))

    def _on_message_lost(self, topic: str, info) -> None:
        """Messages the DDS transport reported lost (never seen by the node), with the usual cause and its fix."""
        self.lost_in_transport += info.total_count_change
        self.events.note("problems", count=info.total_count_change)
        self.last_error = f"{topic}: {info.total_count} messages lost in transport"
        fix = LOST_RELIABLE if self.p("qos") == "reliable" else LOST_IN_TRANSPORT_FIX
        self._log_throttled((topic, "lost"), f"{self.last_error}; {fix}")

    def _check_pairing(self) -> None:
        """Left images arrive but none finds a right partner: say why (no right image at all, or stamps apart)."""
        events = self.events
        if not (self.active and self._needs_pairs() and events.recent("inputs") and not events.recent("pairs")):
            return
        events.note("problems")
        self.last_error = self.matcher.why_unpaired(self.right_topic, bool(events.recent("right_inputs")),
                                                    f"in the last {DIAGNOSTICS_WINDOW_S:.0f} s")
        self._log_throttled((self.right_topic, "unpaired"), self.last_error)

    def _log_throttled(self, key: tuple[str, str], line: str) -> None:
        """Log `line` as an error unless the same key was logged in the last 5 s."""
        now = time.monotonic()
        if now - self._last_report.get(key, -1e9) >= 5.0:
            self._last_report[key] = now
            self.get_logger().error(line)

    # --- worker ---------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            frame = self.mailbox.take(timeout=0.1)
            if frame is None:
                continue
            try:
                with self.stages.frame():
                    self._process(frame)
            except FrameProblem as e:
                self.report(e.topic or self.left_topic, e.problem)
            except Exception as e:  # a bug must not stop a node in an operating room: report and go on
                if not self.context.ok():
                    return  # shut down (Ctrl-C, SIGTERM) while this frame was on its way out
                self.report("dares_depth_node", f"unexpected {type(e).__name__}: {e}")

    def _process(self, frame: Frame) -> None:
        if self.predictor is None:
            raise FrameProblem(self.last_error or "no model loaded", "weights")
        left_info, right_info = self.left_info, self.right_info
        with self.stages("receive"):
            left = to_rgb8(frame.left, self.left_topic)
            right = None if frame.right is None else to_rgb8(frame.right, self.right_topic)
        stamp = stamp_seconds(frame.left.header.stamp)
        eyes = self.pipeline(FrameIn(left, left_info and camera(left_info), right, right_info and camera(right_info),
                                     stamp))
        for eye, out, info, msg in zip(self.eyes, eyes, (left_info, right_info), (frame.left, frame.right)):
            header = Header(stamp=msg.header.stamp, frame_id=self._frame_id(eye, msg))
            messages = output_messages(out, info, header, self.stages)
            with self.stages("publish"):
                self.outputs[eye].publish(messages)
        self.stamp_ages.append(self.get_clock().now().nanoseconds * 1e-9 - stamp)
        self.latencies.append(time.monotonic() - frame.received)
        self.events.note("published")
        self.published += 1

    def _on_pose(self, header, pose) -> None:
        T = pose_matrix(pose)
        if np.isfinite(T).all():
            self.stabilise.poses.add(stamp_seconds(header.stamp), T)

    def _on_mask(self, msg: Image) -> None:
        try:
            self.stabilise.masks.add(stamp_seconds(msg.header.stamp), read_mask(msg))
        except ConversionError as e:
            self.report(e.topic or "mask", e.problem, skipped=False)

    def _frame_id(self, eye: str, msg) -> str:
        """frame_id names the left output frame; the right eye keeps its image's frame_id (both as tf2 takes them)."""
        return self.frame_ids((eye == "left" and self.p("frame_id")) or msg.header.frame_id)

    # --- diagnostics ----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        """Level and message judge the last DIAGNOSTICS_WINDOW_S: OK while depth is published and nothing went
        wrong, WARN while published with problems (bad or lost frames) or while no image arrives, ERROR while
        images arrive (or no model is loaded) and nothing is published."""
        self._check_pairing()
        published, problems, inputs = (self.events.recent(k) for k in ("published", "problems", "inputs"))
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
        latency = np.array(self.latencies or [np.nan])
        values = {
            "rate_hz": f"{rate:.2f}", "latency_p50_s": f"{np.percentile(latency, 50):.4f}",
            "latency_p99_s": f"{np.percentile(latency, 99):.4f}",
            "stamp_age_p50_s": f"{np.median(self.stamp_ages or [np.nan]):.4f}",
            "published": str(self.published), "dropped_frames": str(self.mailbox.dropped),
            "bad_inputs": str(self.bad_inputs), "lost_in_transport": str(self.lost_in_transport),
            "problems_in_window": str(problems), "time_jumps_back": str(self.timeline.jumps),
            "scale_mode": self.p("scale_mode"),
            **(self.pipeline.diagnostics(DIAGNOSTICS_WINDOW_S) if self.pipeline is not None else IDLE_PIPELINE),
            **self.stabilise.summary(DIAGNOSTICS_WINDOW_S),
            **{f"stage_{name}_ms": f"{ms:.2f}" for name, ms in self.stages.medians_ms().items()},
            "last_error": self.last_error if problems or self.predictor is None else "",
        }
        self.diag_pub.publish(diagnostic_array(status, values, self.get_clock().now().to_msg()))

    def destroy_node(self):
        self._stop_worker()
        return super().destroy_node()


def main(args=None) -> None:
    run_node(DepthNode, "dares_depth_node", PARAMETERS.usage("dares_depth_node", SUMMARY), args)


if __name__ == "__main__":
    main()
