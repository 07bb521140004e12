"""Metric scale for up-to-scale depth from a rectified stereo pair (OpenCV SGBM), smoothed over time, and the same
in a worker thread of its own, off a live node's frame path."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .geometry import disparity_to_depth
from .timing import LatestItem


@dataclass
class ScaleEstimate:
    """scale: metres per model depth unit; confidence: fraction of pixels with a trusted stereo match."""

    scale: float
    confidence: float
    updated: bool


class StereoScale:
    """Robust median ratio of stereo depth to model depth over confident pixels, smoothed in log space.

    downscale: SGBM runs on images reduced by this factor; num_disparities at that resolution.
    smoothing: weight of the new frame in the running (log) average; min_confidence: frames whose valid
    fraction is lower leave the estimate unchanged.
    """

    def __init__(self, downscale: int = 2, num_disparities: int = 64, block_size: int = 5,
                 smoothing: float = 0.3, min_confidence: float = 0.05):
        self.downscale = max(1, int(downscale))
        num_disparities = max(16, int(math.ceil(num_disparities / 16) * 16))
        self.sgbm = cv2.StereoSGBM_create(
            minDisparity=0, numDisparities=num_disparities, blockSize=block_size,
            P1=8 * block_size**2, P2=32 * block_size**2, disp12MaxDiff=1, uniquenessRatio=10,
            speckleWindowSize=50, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM,
        )
        self.smoothing, self.min_confidence = smoothing, min_confidence
        self.log_scale: float | None = None

    def stereo_depth(self, left_rgb: np.ndarray, right_rgb: np.ndarray, fx: float, baseline: float) -> np.ndarray:
        """Stereo depth (H,W) at input resolution, units of `baseline`; NaN where SGBM found no match (everywhere
        for images too narrow for its disparity range)."""
        h, w = left_rgb.shape[:2]
        size = (w // self.downscale, h // self.downscale)
        if size[0] <= self.sgbm.getNumDisparities() + self.sgbm.getBlockSize():
            return np.full((h, w), np.nan, np.float32)
        gray = [cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), size,
                           interpolation=cv2.INTER_AREA) for im in (left_rgb, right_rgb)]
        disparity = self.sgbm.compute(gray[0], gray[1]).astype(np.float32) / 16.0  # fixed point, 4 fraction bits
        disparity[disparity <= 0] = np.nan
        disparity = cv2.resize(disparity, (w, h), interpolation=cv2.INTER_NEAREST) * (w / size[0])
        depth = disparity_to_depth(torch.from_numpy(np.nan_to_num(disparity, nan=0.0)), fx, baseline)
        return depth.numpy()

    def update(self, left_rgb: np.ndarray, right_rgb: np.ndarray, model_depth: np.ndarray,
               fx: float, baseline: float) -> ScaleEstimate:
        """Fold one frame into the estimate; model_depth (H,W) in model units, fx in pixels of these images."""
        return self.fold(self.stereo_depth(left_rgb, right_rgb, fx, baseline), model_depth)

    def fold(self, stereo: np.ndarray, model_depth: np.ndarray) -> ScaleEstimate:
        """Fold the median ratio of stereo depth (H,W, NaN where unmatched) to model depth (H,W) into the estimate."""
        valid = np.isfinite(stereo) & np.isfinite(model_depth) & (model_depth > 0)
        confidence = float(valid.mean())
        if confidence >= self.min_confidence:
            ratio = float(np.median(stereo[valid] / model_depth[valid]))
            log_ratio = math.log(ratio)
            if self.log_scale is None:
                self.log_scale = log_ratio
            else:
                self.log_scale += self.smoothing * (log_ratio - self.log_scale)
            return ScaleEstimate(math.exp(self.log_scale), confidence, True)
        scale = math.exp(self.log_scale) if self.log_scale is not None else float("nan")
        return ScaleEstimate(scale, confidence, False)


class BackgroundStereoScale:
    """A StereoScale whose SGBM runs in a thread of its own, so it never delays a frame: offer() hands the worker
    the newest pair at most `rate` times a second (a pair not yet taken is replaced), the worker turns it into a
    stereo depth map, and every frame folds the ratio of the newest stereo map to its own model depth (on a grid of
    about SAMPLES pixels) into the running scale. The network's scale moves from frame to frame, and a ratio taken
    with the frame's own depth follows it, where a scale measured on an older frame would not (bench stereo-scale).
    At rate 0 every frame's own pair is measured on the frame path. stages: a timing.Stages that gets
    "stereo_worker", the worker's time per pair."""

    SAMPLES = 20000  # pixels of a frame's ratio against the newest stereo map

    def __init__(self, estimator: StereoScale, rate: float, stages=None):
        self.estimator, self.period, self.stages = estimator, 1.0 / rate if rate else 0.0, stages
        self.measurements = 0  # stereo depth maps made so far
        self.scale, self.confidence, self.updated = float("nan"), 0.0, -math.inf  # monotonic time of the newest
        self._stereo: tuple[np.ndarray, int] | None = None  # newest stereo depth map on a grid, and its stride
        self._lock = threading.Lock()
        self._pairs = LatestItem()
        self._offered = -math.inf
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="dares-stereo-scale", daemon=True)
        self._thread.start()

    def _stereo_map(self, left_rgb, right_rgb, fx: float, baseline: float) -> np.ndarray:
        """SGBM on a pair: its stereo depth (H,W), kept on a grid of about SAMPLES pixels for the frames to come."""
        start = time.perf_counter()
        stereo = self.estimator.stereo_depth(left_rgb, right_rgb, fx, baseline)
        stride = max(1, int(math.sqrt(stereo.size / self.SAMPLES)))
        self._stereo = (stereo[::stride, ::stride], stride)
        self.measurements += 1
        if np.isfinite(self._stereo[0]).mean() >= self.estimator.min_confidence:  # matched enough to measure by
            self.updated = time.monotonic()
        if self.stages is not None:
            self.stages.add("stereo_worker", time.perf_counter() - start)
        return stereo

    def _fold(self, stereo: np.ndarray, model_depth: np.ndarray) -> None:
        with self._lock:
            est = self.estimator.fold(stereo, model_depth)
            self.confidence = est.confidence
            if est.updated:
                self.scale = est.scale

    def offer(self, left_rgb, right_rgb, fx: float, baseline: float) -> None:
        """Queue a pair for the worker unless one was offered less than 1/rate s ago."""
        now = time.monotonic()
        if now - self._offered >= self.period:
            self._offered = now
            self._pairs.put((left_rgb, right_rgb, fx, baseline))

    def scale_for(self, left_rgb, right_rgb, model_depth: np.ndarray, fx: float, baseline: float) -> float:
        """The scale a frame takes (metres per model unit, or the baseline's unit); model_depth (H,W) in model units.
        Its ratio against the newest stereo map, this pair offered to the worker; before the first map, or at rate
        0, this pair measured now (NaN while SGBM finds too few matches for a first scale)."""
        newest = self._stereo
        if newest is None or not self.period:
            self._fold(self._stereo_map(left_rgb, right_rgb, fx, baseline), model_depth)
        else:
            stereo, stride = newest
            self.offer(left_rgb, right_rgb, fx, baseline)
            self._fold(stereo, model_depth[::stride, ::stride])
        return self.scale

    def age(self) -> float:
        """Seconds since the newest stereo map with enough matches (infinite before the first)."""
        return time.monotonic() - self.updated

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _work(self) -> None:
        while not self._stop.is_set():
            pair = self._pairs.take(timeout=0.1)
            if pair is not None:
                self._stereo_map(*pair)
