"""The depth node's work on one frame, ROS-free: a pipeline of small stages that dares_depth_node, `dares bag infer`
and the benchmarks drive. A frame's images and calibrations go in; each eye's metric depth and the arrays the node
publishes (points, coloured preview) come out.

    intrinsics (P when rectified, else K; the calibration must describe the image) -> predict (the merged network)
    -> metric scale (relative, fixed, or the rectified pair's stereo scale) -> confidence (dares_core.confidence:
    depth edges, and with confidence_photometric in stereo the other eye warped by the depth) -> stabilise (the
    left eye's depth with the previous output, by the camera's motion) -> outputs (points on the device, less those
    under min_confidence; preview)

Settings are read through `setting(name)` at every frame, so that a node's live parameters take effect at the next
frame; their names are the depth node's parameters (docs/nodes.md). A stage that cannot make its part raises
FrameProblem (the input concerned and one line naming the problem and the fix): the frame is skipped. Pairing left
and right by stamp happens before (dares_core.sync.StereoMatcher), where the frames arrive.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from .camera import Camera, Uncalibrated
from .confidence import StereoPair, confidence
from .errors import FrameProblem
from .stereo_scale import LiveStereoScale, StereoScale
from .sync import StampHistory
from .temporal import DepthStabiliser, stabilise_on_grid
from .timing import Stages

MM = 1e-3  # DARES depth is in nominal millimetres (trained on SCARED, 0.1-150): metres per unit in relative mode
STEREO_SETTINGS = {"stereo_matcher": "sparse", "stereo_downscale": 2, "stereo_num_disparities": 64,
                   "stereo_smoothing": 0.3, "stereo_rate": 5.0, "stereo_max_age": 2.0}  # the stereo scale's defaults
PREVIEW_ROWS = 256  # the coloured preview is coloured at about this many rows, then enlarged


@dataclass
class FrameIn:
    """One frame: left (H,W,3) uint8 RGB and its Camera (None: no calibration yet), the right eye likewise (None
    without a partner), and the left stamp in seconds."""

    left: np.ndarray
    left_camera: Camera | None
    right: np.ndarray | None = None
    right_camera: Camera | None = None
    stamp: float = 0.0


@dataclass
class EyeOut:
    """One eye's outputs: depth (H,W) float32 metres (NaN invalid) on the model's device; K (3,3) the intrinsics it
    was measured with, None for an uncalibrated camera (no points); points (h,w,3) float32 metres of every
    point_stride-th pixel (optical frame) and their rgb (h,w,3) uint8, or None; preview (H,W,3) BGR uint8 or None;
    confidence (H,W) float32 in [0,1] of the depth (dares_core.confidence), or None."""

    depth: torch.Tensor
    K: np.ndarray | None
    points: np.ndarray | None = None
    rgb: np.ndarray | None = None
    preview: np.ndarray | None = None
    confidence: torch.Tensor | None = None


class Intrinsics:
    """Each eye's (3,3) intrinsics by the rule of dares_core.camera (setting "rectified": P, else K); None for an
    uncalibrated camera, said through report(topic, problem, skipped=False) and remembered in `source`."""

    def __init__(self, setting: Callable[[str], Any], report: Callable):
        self.setting, self.report = setting, report
        self.source = ""  # what the last frame's intrinsics came from, for diagnostics

    def __call__(self, camera: Camera | None, image: np.ndarray, topic: str) -> np.ndarray | None:
        if camera is None:
            raise FrameProblem("no camera_info received yet; publish it beside the images", topic)
        rectified = self.setting("rectified")
        try:
            K = camera.checked(image.shape, topic, rectified)
        except Uncalibrated as e:
            self.source = "uncalibrated"
            self.report(topic, e.problem, skipped=False)
            return None
        self.source = "P (rectified)" if rectified and camera.P.any() else "K"
        return K


class MetricScale:
    """Metres per model depth unit, by the setting scale_mode: relative (model units read as mm), fixed
    (fixed_scale), stereo (the rectified pair's LiveStereoScale: stereo_matcher, stereo_rate, and a StereoScale of
    stereo_downscale, stereo_num_disparities and stereo_smoothing, read when the first stereo frame makes it). Stereo
    scale pauses (relative
    scale) while an eye is uncalibrated; a scale older than stereo_max_age is said through report; `scale` and
    `confidence` are the stereo scale's newest. right_topic: the right images' topic, which problems name."""

    def __init__(self, setting: Callable[[str], Any], report: Callable, stages: Stages | None = None,
                 right_topic: str = "right/image_rect"):
        self.setting, self.report, self.right_topic, self.stages = setting, report, right_topic, stages
        self.stereo: LiveStereoScale | None = None
        self.scale, self.confidence = float("nan"), 0.0

    def __call__(self, left: np.ndarray, right: np.ndarray | None, depth: torch.Tensor, K: np.ndarray | None,
                 right_K: np.ndarray | None, baseline: float | None) -> float:
        """depth: (H,W) of the left eye in model units; K, right_K: the eyes' intrinsics (None: uncalibrated);
        baseline: metres."""
        mode = self.setting("scale_mode")
        if mode == "fixed":
            return self.setting("fixed_scale")
        if mode == "relative" or (right is not None and (K is None or right_K is None)):
            return MM
        if right is None:  # switched to stereo while this left frame was queued
            raise FrameProblem("waiting for a right frame matching the left stamp", self.right_topic)
        if self.stereo is None:
            setting = self.setting
            self.stereo = LiveStereoScale(StereoScale(setting("stereo_downscale"), setting("stereo_num_disparities"),
                                                      smoothing=setting("stereo_smoothing")),
                                          setting("stereo_matcher"), setting("stereo_rate"), self.stages)
        if not math.isfinite(self.stereo.scale_for(left, right, depth.cpu().numpy(), K[0, 0], baseline)):
            raise FrameProblem(f"too few stereo matches for a first scale ({self.stereo.confidence:.0%} valid); check "
                               "rectification and stereo_num_disparities", self.right_topic)
        self.scale, self.confidence = self.stereo.scale, self.stereo.confidence
        if self.age() > self.setting("stereo_max_age"):
            self.report(self.right_topic, f"the stereo scale is {self.age():.1f} s old (stereo_max_age "
                                          f"{self.setting('stereo_max_age'):g} s): stereo matching finds too few "
                                          "matches, or SGBM is slower than stereo_rate; depth keeps the last scale",
                        skipped=False)
        return self.scale

    def age(self) -> float:
        """Seconds since the newest stereo measurement with enough matches (infinite before the first)."""
        return math.inf if self.stereo is None else self.stereo.age()

    def close(self) -> None:
        if self.stereo is not None:
            self.stereo.close()


class Stabilise:
    """The left eye's depth stabilised with the previous output (dares_core.temporal: carried along the optical flow
    from the previous image, moved by the camera's motion between the two frames' poses), never blended where the
    instrument mask marks (setting temporal_use_mask). Poses and masks are added by stamp to `poses` and `masks`
    as they arrive; a frame waits up to temporal_pose_wait s for its own. Without a pose, intrinsics or the mask
    asked for, the depth passes unchanged and the stabiliser starts again. Settings: temporal_weight,
    temporal_tolerance, temporal_scale_weight, temporal_pose_wait, temporal_use_mask, sync_tolerance."""

    def __init__(self, setting: Callable[[str], Any], report: Callable):
        self.setting, self.report = setting, report
        self.poses = StampHistory()  # camera-to-world (4,4) of the camera: odometry's or the robot's
        self.masks = StampHistory(10)  # (H,W) bool, instruments: pixels never blended
        self.stabiliser = DepthStabiliser()
        self.pose: np.ndarray | None = None  # the camera pose of the last stabilised output
        self.blended: deque = deque(maxlen=10000)  # (monotonic s, fraction of the frame blended, or NaN: none)

    def __call__(self, depth_m: torch.Tensor, rgb: np.ndarray, stamp: float, K: np.ndarray | None) -> torch.Tensor:
        """depth_m (H,W) metres, rgb (H,W,3) of the same frame, stamp s: the stabilised depth (H,W)."""
        tolerance, wait, use_mask = (self.setting(n) for n in ("sync_tolerance", "temporal_pose_wait",
                                                               "temporal_use_mask"))
        pose = None if K is None else self.poses.at(stamp, tolerance, wait)
        mask = None
        if pose is not None and use_mask:
            mask = self.masks.at(stamp, tolerance, wait)
            if mask is None:
                self.report("mask", "no mask at this frame's stamp (temporal_use_mask): its depth went out "
                                    "unstabilised; publish the mask with the image's stamp", skipped=False)
        if pose is None or (mask is None and use_mask):
            self.restart()
            self.blended.append((time.monotonic(), math.nan))
            return depth_m
        self.stabiliser.weight, self.stabiliser.tolerance, self.stabiliser.scale_weight = (
            self.setting(n) for n in ("temporal_weight", "temporal_tolerance", "temporal_scale_weight"))
        motion = None if self.pose is None else np.linalg.inv(pose) @ self.pose
        stabilised, blended = stabilise_on_grid(self.stabiliser, depth_m, rgb, K, motion, mask)
        self.pose = pose
        self.blended.append((time.monotonic(), blended))
        return stabilised

    def restart(self) -> None:
        self.stabiliser.reset()
        self.pose = None

    def summary(self, window_s: float) -> dict:
        """Diagnostics over the last window_s: the median % of each frame blended with the previous output, and the
        frames that went out unstabilised (no camera pose, or no mask where temporal_use_mask asks)."""
        since = time.monotonic() - window_s
        recent = np.array([b for t, b in self.blended if t >= since])
        posed = recent[np.isfinite(recent)]
        return {"temporal_blended_p50_pct": f"{100 * np.median(posed):.1f}" if posed.size else "nan",
                "temporal_unstabilised_frames": str(int(np.isnan(recent).sum()))}


def preview(depth) -> np.ndarray:
    """The coloured preview (H,W,3) BGR of depth (H,W): coloured on every k-th pixel (about PREVIEW_ROWS rows) and
    enlarged, a k-th of the work; the depth it shows was upsampled from the network's resolution, so nothing is
    lost."""
    from .visualize import colorize_inverse_depth

    height, width = depth.shape
    k = max(1, height // PREVIEW_ROWS)
    small = colorize_inverse_depth(depth[::k, ::k])
    return small if k == 1 else cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def eye_outputs(depth_m, rgb: np.ndarray, K: np.ndarray | None, point_stride: int = 1, points: bool = True,
                colored: bool = True, stages: Stages | None = None, confidence: torch.Tensor | None = None,
                min_confidence: float = 0.0) -> EyeOut:
    """An eye's EyeOut of depth_m (H,W) metres (an array or a tensor on any device: the points are back-projected
    where it lies, on the GPU for the node) and rgb (H,W,3); confidence (H,W) in [0,1] or None: points whose
    confidence is below min_confidence are left out (NaN); stages gets "cloud" and "preview"."""
    from .geometry import backproject
    from .timing import untimed

    stages = stages or untimed
    depth = torch.as_tensor(depth_m)
    out = EyeOut(depth, K, confidence=confidence)
    if points and K is not None:
        with stages("cloud"):
            K = K.copy()
            K[:2] /= point_stride  # pixel u = s*u' samples the same rays with fx/s, cx/s
            sub = depth[::point_stride, ::point_stride]
            if confidence is not None and min_confidence > 0:
                trusted = confidence[::point_stride, ::point_stride] >= min_confidence
                sub = torch.where(trusted, sub, torch.full_like(sub, float("nan")))
            sub = sub.contiguous()
            xyz = backproject(sub[None, None], torch.from_numpy(K).float()[None].to(sub.device))[0]
            out.points, out.rgb = xyz.permute(1, 2, 0).cpu().numpy(), rgb[::point_stride, ::point_stride]
    if colored:
        with stages("preview"):
            out.preview = preview(depth)
    return out


def eye_confidences(disparity: torch.Tensor, unit_mm: float, size: tuple[int, int],
                    pair: tuple | None = None) -> list[torch.Tensor]:
    """Each eye's confidence (H,W) at `size` of the network's disparity (eyes,h,w) (dares_core.confidence); pair:
    (left, right (H,W,3) uint8, fx pixels at H,W, baseline m, scale m per model unit) of a rectified pair with a
    stereo scale, for the photometric term (the left eye judged by the right image and, with eyes both, the right
    by the left), or None: the edge term alone."""
    if pair is None:
        return list(confidence(disparity, size))
    left, right, fx, baseline, scale = pair
    eyes = (left, right)
    return [confidence(disparity[i:i + 1], size, StereoPair(eyes[i], eyes[1 - i], fx, baseline, unit_mm * scale,
                                                            i == 0))[0] for i in range(len(disparity))]


class DepthPipeline:
    """A frame in, each eye's EyeOut out (eyes: ("left",) or ("left", "right"), both in one batch). predictor: a
    DepthPredictor; setting(name): the settings of the stages above plus point_stride, publish_points and
    publish_colored; report(topic, problem, skipped) hears what a frame went out without (an uncalibrated camera, a
    missing mask, an old stereo scale); stages: a timing.Stages that gets each stage's time; stabilise: a Stabilise
    made before (a node's, whose pose and mask histories fill before the model loads); right_topic, info_topics:
    the right images and the eyes' calibrations as problems name them."""

    def __init__(self, predictor, eyes: tuple[str, ...], setting: Callable[[str], Any], report: Callable,
                 stages: Stages, stabilise: Stabilise | None = None, right_topic: str = "right/image_rect",
                 info_topics: tuple[str, str] = ("left/camera_info", "right/camera_info")):
        self.predictor, self.eyes, self.setting, self.stages = predictor, eyes, setting, stages
        self.right_topic, self.info_topics = right_topic, info_topics
        self.intrinsics = Intrinsics(setting, report)
        self.scale = MetricScale(setting, report, stages, right_topic)
        self.stabilise = stabilise or Stabilise(setting, report)
        self.frame_scale = 0.0  # the last frame's metres per unit
        self.scale_changes: deque = deque(maxlen=10000)  # (monotonic s, |log(scale / previous frame's)|)

    def __call__(self, frame: FrameIn) -> list[EyeOut]:
        left, right = frame.left, frame.right
        with self.stages("receive"):
            K = self.intrinsics(frame.left_camera, left, self.info_topics[0])
            right_K = None if right is None else self._right(frame, left)
        if self.eyes == ("left",):
            images, Ks = [left], [K]
        elif right is None:  # eyes: both, a lone left frame queued before pairing started
            raise FrameProblem("waiting for a right frame matching the left stamp", self.right_topic)
        else:
            images, Ks = [left, right], [K, right_K]
        with self.stages("receive"):
            batch = torch.from_numpy(np.stack(images)) if len(images) > 1 else torch.from_numpy(left)[None]
        prediction = self.predictor.predict(batch, stages=self.stages)
        depth = prediction.depth  # (eyes,H,W) on the model's device
        with self.stages("stereo_scale"):
            stereo = self.setting("scale_mode") == "stereo" and K is not None and right_K is not None
            baseline = frame.right_camera.baseline() if stereo else None
            scale = self.scale(left, right, depth[0], K, right_K, baseline)
        if self.frame_scale > 0 and scale > 0:  # how much the scale moved since the last frame (log ratio)
            self.scale_changes.append((time.monotonic(), abs(math.log(scale / self.frame_scale))))
        self.frame_scale = scale
        confidences = [None] * len(images)
        min_confidence = self.setting("min_confidence")
        if self.setting("publish_confidence") or min_confidence > 0:
            with self.stages("confidence"):
                photometric = stereo and self.setting("confidence_photometric")
                pair = (left, right, K[0, 0], baseline, scale) if photometric else None
                confidences = eye_confidences(prediction.disparity, self.predictor.net.config.depth_unit_mm,
                                              depth.shape[-2:], pair)
        depth = depth.float() * scale
        if self.setting("temporal_weight"):
            with self.stages("temporal"):
                depth[0] = self.stabilise(depth[0], left, frame.stamp, K)
        return [eye_outputs(eye_depth, rgb, eye_K, self.setting("point_stride"), self.setting("publish_points"),
                            self.setting("publish_colored"), self.stages, eye_confidence, min_confidence)
                for rgb, eye_K, eye_depth, eye_confidence in zip(images, Ks, depth, confidences)]

    def _right(self, frame: FrameIn, left: np.ndarray) -> np.ndarray | None:
        """The right eye's intrinsics; its image must be the left's size (a rectified pair)."""
        right = frame.right
        if right.shape != left.shape:
            raise FrameProblem(f"is {right.shape[1]}x{right.shape[0]} but left is {left.shape[1]}x{left.shape[0]}; "
                               "publish a rectified pair of one size", self.right_topic)
        return self.intrinsics(frame.right_camera, right, self.info_topics[1])

    def diagnostics(self, window_s: float) -> dict:
        """What the intrinsics came from, the metric scale, its age and its frame-to-frame change in % (median and
        largest over the last window_s), as diagnostic values."""
        since = time.monotonic() - window_s
        changes = [c for t, c in self.scale_changes if t >= since]
        scale, predictor = self.scale, self.predictor  # no predictor while no model could be loaded
        check = None if predictor is None else predictor.backend_check
        return {"backend": "" if predictor is None else predictor.backend,
                "backend_check_rel_diff": "nan" if check is None else f"{check:.2e}",
                "intrinsics": self.intrinsics.source, "scale_m_per_unit": f"{scale.scale:.6g}",
                "scale_confidence": f"{scale.confidence:.3f}", "scale_age_s": f"{scale.age():.2f}",
                "scale_matcher": scale.stereo.source if scale.stereo else "",
                "scale_fallbacks": str(scale.stereo.fallbacks if scale.stereo else 0),
                "scale_change_p50_pct": f"{100 * math.expm1(float(np.median(changes))):.3f}" if changes else "nan",
                "scale_change_max_pct": f"{100 * math.expm1(max(changes)):.3f}" if changes else "nan"}

    def close(self) -> None:
        self.scale.close()
