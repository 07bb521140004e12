"""An online, causal depth stabiliser: the previous output carried into the current frame with the camera's motion
and blended with the new depth where the two agree. It uses only what a live system has (the previous output, the
current depth, a camera motion from odometry, kinematics or an estimate), never ground truth.

First, the new depth's scale is pulled toward the carried output's (`scale_weight`, in log space) where the two
differ by less than `tolerance`: a relative network's scale, or a stereo scale, that jitters between frames is held,
while a lasting change still comes through.
Each pixel then takes the carried output's share `weight` where the two agree, less as they differ, and none where
they differ by `tolerance` (relative) or more: there the new depth passes through unchanged, so real motion of the
scene and moving instruments are not smeared, and a large change is not lagged. Pixels a mask marks (instruments)
are never blended. The previous output is carried by forward splatting with a z-buffer (the nearest surface wins),
written here because no library splats a depth map into another view with occlusion.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from .names import TEMPORAL_SCALE_WEIGHT, TEMPORAL_TOLERANCE, TEMPORAL_WEIGHT

TEMPORAL_GRID_PIXELS = 320 * 256  # the most pixels a live node's stabiliser carries per frame (stabilise_on_grid)


def carry_depth(depth: np.ndarray, K: np.ndarray, T: np.ndarray) -> np.ndarray:
    """depth (H,W) of one view (<= 0 or NaN: none) seen from another: T (4,4) takes the first camera's points into
    the second's (same length unit as depth), K (3,3) pixels of both. Returns (H,W) depth in the second view, 0
    where nothing lands; where several pixels land on one, the nearest; one-pixel gaps between landed pixels take
    their nearest neighbour's depth."""
    height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width]
    valid = np.isfinite(depth) & (depth > 0)
    z = depth[valid]
    rays = np.linalg.inv(K) @ np.stack([u[valid], v[valid], np.ones_like(z)]).astype(np.float64)
    points = T[:3, :3] @ (rays * z) + T[:3, 3:4]
    in_front = points[2] > 1e-9
    points = points[:, in_front]
    pixels = K @ (points / points[2])
    col, row = np.round(pixels[0]).astype(np.int64), np.round(pixels[1]).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    out = np.full(height * width, np.inf, np.float32)
    np.minimum.at(out, row[inside] * width + col[inside], points[2, inside].astype(np.float32))
    out = out.reshape(height, width)
    # a view that magnifies leaves one-pixel gaps between splats: filled by their nearest neighbour's depth
    filled = cv2.erode(out, np.ones((3, 3), np.uint8))
    out = np.where(np.isfinite(out), out, filled)
    out[np.isinf(out)] = 0.0
    return out


class DepthStabiliser:
    """weight: the carried previous output's share where it equals the new depth (0: off), falling as 1 - x**2 with
    their relative difference x / tolerance to none at the tolerance (the new depth passes through there and beyond:
    no hard edge between blended and passed pixels); scale_weight: how far the new depth's
    scale is pulled toward the carried output's first (0: not at all, 1: held to it), as a share of the log of their
    median ratio. Depth in any one unit over time."""

    def __init__(self, weight: float = TEMPORAL_WEIGHT, tolerance: float = TEMPORAL_TOLERANCE,
                 scale_weight: float = TEMPORAL_SCALE_WEIGHT):
        if not 0 <= weight < 1 or not tolerance > 0 or not 0 <= scale_weight <= 1:
            raise ValueError(f"weight {weight} must be in [0, 1), tolerance {tolerance} positive and scale_weight "
                             f"{scale_weight} in [0, 1]")
        self.weight, self.tolerance, self.scale_weight = weight, tolerance, scale_weight
        self.previous: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous output (time went back, a new sequence)."""
        self.previous = None

    def __call__(self, depth: np.ndarray, K: np.ndarray, motion: np.ndarray | None,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(stabilised depth (H,W), the fraction of pixels blended) of a new depth (H,W); motion (4,4): the
        previous camera's points into this one's (None: unknown, nothing is carried); mask (H,W) bool: pixels
        never blended (instruments)."""
        depth = np.asarray(depth, np.float32)
        if self.previous is None or motion is None or self.previous.shape != depth.shape or not self.weight:
            self.previous = depth.copy()
            return depth, 0.0
        carried = carry_depth(self.previous, K, motion)
        landed = (carried > 0) & (depth > 0)
        if mask is not None:
            landed &= ~mask
        ratio = float(np.median(carried[landed] / depth[landed])) if landed.any() else 1.0
        if abs(ratio - 1) <= self.tolerance:  # a jump of the whole frame's scale: held in part; a larger change passes
            depth = depth * np.float32(ratio**self.scale_weight)
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.minimum(np.abs(carried - depth) / (self.tolerance * depth), 1.0)  # 1: at the tolerance or beyond
        share = np.where(landed, self.weight * (1 - off**2), 0.0)
        out = (depth + share * (carried - depth)).astype(np.float32)
        self.previous = out
        return out, float((share > 0).mean())


def stabilise_on_grid(stabiliser: DepthStabiliser, depth: torch.Tensor, K: np.ndarray, motion: np.ndarray | None,
                      pixels: int = TEMPORAL_GRID_PIXELS) -> tuple[torch.Tensor, float]:
    """A live node's stabiliser at a bounded cost: `stabiliser` runs on every k-th pixel of depth (H,W) metres (a
    tensor on any device; k so that at most `pixels` remain) with K (3,3) scaled to that grid, and its correction
    (stabilised / new) is carried back to every pixel of its k x k block. The node's depth is upsampled from the
    network's resolution, so the grid loses little. Returns (stabilised depth (H,W) on depth's device, the fraction
    of grid pixels blended)."""
    height, width = depth.shape
    k = max(1, math.ceil(math.sqrt(height * width / pixels)))
    grid = depth[::k, ::k].float().cpu().numpy()
    grid_K = np.array(K, dtype=np.float64)
    grid_K[:2] /= k  # grid pixel u' is pixel k*u': the same rays with fx/k, cx/k
    stabilised, blended = stabiliser(grid, grid_K, motion)
    with np.errstate(divide="ignore", invalid="ignore"):
        correction = np.where(grid > 0, stabilised / grid, 1.0).astype(np.float32)
    correction = torch.from_numpy(correction).to(depth.device)
    correction = correction.repeat_interleave(k, 0).repeat_interleave(k, 1)[:height, :width]
    return depth * correction, blended
