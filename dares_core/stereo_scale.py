"""Metric scale for up-to-scale depth from a rectified stereo pair (OpenCV: sparse Lucas-Kanade matches or dense
SGBM), smoothed over time, and the scale a live node's frames take, SGBM in a worker thread of its own off the frame
path."""

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

    downscale: the matching runs on images reduced by this factor; num_disparities at that resolution.
    smoothing: weight of the new frame in the running (log) average; min_confidence: frames whose valid
    fraction is lower leave the estimate unchanged.
    """

    SPARSE_POINTS = 256  # grid pixels a sparse match tries per frame (3 ms at 1280x1024 on 2 CPU cores)

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

    def sparse_ratios(self, left_rgb: np.ndarray, right_rgb: np.ndarray, model_depth: np.ndarray, fx: float,
                      baseline: float) -> tuple[np.ndarray, float]:
        """Ratios of stereo depth (units of `baseline`) to model depth (H,W) at about SPARSE_POINTS grid pixels, and
        the fraction of the grid matched. Pyramidal Lucas-Kanade (OpenCV) tracks each grid pixel from left to right
        and back, on images reduced by `downscale`; a match counts when it comes back within half a pixel, stays on
        its row (rectified) and has a disparity in (0.5, num_disparities]. Lucas-Kanade rather than SGBM here: it
        measures only the pixels asked for, so it costs a few milliseconds where SGBM costs tens to a hundred."""
        h, w = left_rgb.shape[:2]
        size = (max(1, w // self.downscale), max(1, h // self.downscale))
        gray = [cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
                for im in (left_rgb, right_rgb)]
        step = max(1, int(math.sqrt(size[0] * size[1] / self.SPARSE_POINTS)))
        ys, xs = np.mgrid[step // 2:size[1]:step, step // 2:size[0]:step]
        grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)[:, None]
        lk = dict(winSize=(9, 9), maxLevel=3, minEigThreshold=1e-4)
        matched, found, _ = cv2.calcOpticalFlowPyrLK(gray[0], gray[1], grid, None, **lk)
        back, found_back, _ = cv2.calcOpticalFlowPyrLK(gray[1], gray[0], matched, None, **lk)
        disparity = grid[:, 0, 0] - matched[:, 0, 0]
        ok = ((found[:, 0] == 1) & (found_back[:, 0] == 1) & (np.abs(back - grid).max(axis=(1, 2)) < 0.5)
              & (np.abs(matched[:, 0, 1] - grid[:, 0, 1]) < 1.0) & (disparity > 0.5)
              & (disparity <= self.sgbm.getNumDisparities()))
        x = np.minimum((grid[ok, 0, 0] * w / size[0]).astype(int), w - 1)
        y = np.minimum((grid[ok, 0, 1] * h / size[1]).astype(int), h - 1)
        stereo = fx * baseline / (disparity[ok] * w / size[0])
        model = model_depth[y, x]
        trusted = np.isfinite(model) & (model > 0)
        return stereo[trusted] / model[trusted], float(trusted.sum() / len(grid))

    def fold(self, stereo: np.ndarray, model_depth: np.ndarray) -> ScaleEstimate:
        """Fold the median ratio of stereo depth (H,W, NaN where unmatched) to model depth (H,W) into the estimate."""
        valid = np.isfinite(stereo) & np.isfinite(model_depth) & (model_depth > 0)
        return self.fold_ratios(stereo[valid] / model_depth[valid], float(valid.mean()))

    def fold_ratios(self, ratios: np.ndarray, confidence: float) -> ScaleEstimate:
        """Fold the median of stereo-to-model depth ratios, measured on `confidence` of the pixels, into the
        estimate (left unchanged below min_confidence)."""
        if confidence >= self.min_confidence and len(ratios):
            log_ratio = math.log(float(np.median(ratios)))
            if self.log_scale is None:
                self.log_scale = log_ratio
            else:
                self.log_scale += self.smoothing * (log_ratio - self.log_scale)
            return ScaleEstimate(math.exp(self.log_scale), confidence, True)
        scale = math.exp(self.log_scale) if self.log_scale is not None else float("nan")
        return ScaleEstimate(scale, confidence, False)


class LiveStereoScale:
    """The scale a live node's frames take, by one of STEREO_MATCHERS. sparse: every frame folds the ratio of its own
    pair's sparse stereo depth (StereoScale.sparse_ratios, on the frame path) to its model depth into the running
    scale. sgbm: SGBM runs in a thread of its own, so it never delays a frame: offer() hands the worker the newest
    pair at most `rate` times a second (a pair not yet taken is replaced), the worker turns it into a stereo depth
    map, and every frame folds the ratio of the newest map to its own model depth (on a grid of about SAMPLES
    pixels); at rate 0 every frame's own pair goes through SGBM on the frame path. A ratio taken with the frame's
    own depth follows the network's scale from frame to frame, where one measured on an older frame would not; a
    stereo map up to 1/rate s old also misses the camera's motion since, which the sparse matches of the frame's own
    pair do not (bench stereo-scale). stages: a timing.Stages that gets "stereo_worker", SGBM's time per pair in
    the worker."""

    SAMPLES = 20000  # pixels of a frame's ratio against the newest stereo map
    FALLBACK_AFTER_S = 1.0  # sparse: without a scale, or with none measured for this long, SGBM gives it

    def __init__(self, estimator: StereoScale, matcher: str = "sparse", rate: float = 0.0, stages=None):
        self.estimator, self.matcher, self.stages = estimator, matcher, stages
        self.period = 1.0 / rate if rate else 0.0  # sgbm's worker; sparse's fallback uses it too
        self.measurements = 0  # stereo measurements made so far (sparse matches or SGBM maps)
        self.fallbacks = 0  # sparse frames whose scale SGBM gave instead (too few matches)
        self.source = ""  # the matcher that gave the newest scale: sparse, or sgbm
        self.scale, self.confidence, self.updated = float("nan"), 0.0, -math.inf  # monotonic time of the newest
        self._stereo: tuple[np.ndarray, int, float] | None = None  # newest stereo map on a grid, its stride, when
        self._lock = threading.Lock()
        self._pairs = LatestItem()
        self._offered = -math.inf
        self._stop = threading.Event()
        self._thread = None
        if self.period:
            self._thread = threading.Thread(target=self._work, name="dares-stereo-scale", daemon=True)
            self._thread.start()

    def _stereo_map(self, left_rgb, right_rgb, fx: float, baseline: float) -> np.ndarray:
        """SGBM on a pair: its stereo depth (H,W), kept on a grid of about SAMPLES pixels for the frames to come."""
        start = time.perf_counter()
        stereo = self.estimator.stereo_depth(left_rgb, right_rgb, fx, baseline)
        stride = max(1, int(math.sqrt(stereo.size / self.SAMPLES)))
        self._stereo = (stereo[::stride, ::stride], stride, time.monotonic())
        self.measurements += 1
        if np.isfinite(self._stereo[0]).mean() >= self.estimator.min_confidence:  # matched enough to measure by
            self.updated = time.monotonic()
        if self.stages is not None:
            self.stages.add("stereo_worker", time.perf_counter() - start)
        return stereo

    def _fold(self, stereo: np.ndarray, model_depth: np.ndarray) -> None:
        with self._lock:
            self._take(self.estimator.fold(stereo, model_depth), "sgbm")

    def _take(self, est: ScaleEstimate, source: str) -> None:
        self.confidence = est.confidence
        if est.updated:
            self.scale, self.source = est.scale, source
            if self.matcher == "sparse":  # sgbm's age is its newest map's (_stereo_map)
                self.updated = time.monotonic()

    def offer(self, left_rgb, right_rgb, fx: float, baseline: float) -> None:
        """Queue a pair for the worker unless one was offered less than 1/rate s ago."""
        now = time.monotonic()
        if now - self._offered >= self.period:
            self._offered = now
            self._pairs.put((left_rgb, right_rgb, fx, baseline))

    def scale_for(self, left_rgb, right_rgb, model_depth: np.ndarray, fx: float, baseline: float) -> float:
        """The scale a frame takes (metres per model unit, or the baseline's unit); model_depth (H,W) in model units.
        sparse: this pair's matches; sgbm: its ratio against the newest stereo map, this pair offered to the worker,
        and before the first map, or at rate 0, this pair measured now. NaN while too few pixels match for a first
        scale."""
        if self.matcher == "sparse":
            ratios, confidence = self.estimator.sparse_ratios(left_rgb, right_rgb, model_depth, fx, baseline)
            self.measurements += 1
            if confidence >= self.estimator.min_confidence:
                with self._lock:
                    self._take(self.estimator.fold_ratios(ratios, confidence), "sparse")
                return self.scale
            if math.isfinite(self.scale) and self.age() < self.FALLBACK_AFTER_S:  # a frame or two: the last holds
                self.confidence = confidence
                return self.scale
            # texture Lucas-Kanade cannot follow (a periodic weave aliases its pyramid) or too little of it: SGBM's
            # dense search, from its worker while its newest map is recent (else on this pair, on the frame path)
            self.fallbacks += 1
            recent = self._stereo is not None and time.monotonic() - self._stereo[2] < 2 * self.period
            return self._sgbm_scale(left_rgb, right_rgb, model_depth, fx, baseline, recent)
        return self._sgbm_scale(left_rgb, right_rgb, model_depth, fx, baseline, self._stereo is not None)

    def _sgbm_scale(self, left_rgb, right_rgb, model_depth: np.ndarray, fx: float, baseline: float,
                    use_newest: bool) -> float:
        """The frame's ratio against the newest SGBM map (this pair offered to the worker) where use_newest and
        there is a worker, else against this pair's own map, made now."""
        newest = self._stereo
        if not use_newest or not self.period:
            self._fold(self._stereo_map(left_rgb, right_rgb, fx, baseline), model_depth)
        else:
            stereo, stride, _ = newest
            self.offer(left_rgb, right_rgb, fx, baseline)
            self._fold(stereo, model_depth[::stride, ::stride])
        return self.scale

    def age(self) -> float:
        """Seconds since the newest stereo measurement with enough matches (infinite before the first)."""
        return time.monotonic() - self.updated

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _work(self) -> None:
        while not self._stop.is_set():
            pair = self._pairs.take(timeout=0.1)
            if pair is not None:
                self._stereo_map(*pair)
