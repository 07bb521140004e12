"""Metric scale for up-to-scale depth from a rectified stereo pair (OpenCV SGBM), smoothed over time."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .geometry import disparity_to_depth


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
        """Stereo depth (H,W) at input resolution, units of `baseline`; NaN where SGBM found no match."""
        h, w = left_rgb.shape[:2]
        size = (w // self.downscale, h // self.downscale)
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
        stereo = self.stereo_depth(left_rgb, right_rgb, fx, baseline)
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
