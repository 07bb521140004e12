"""An online, causal depth stabiliser: the previous output carried into the current frame and blended with the new
depth where the two agree. It uses only what a live system has (the previous output, the current frame and depth,
a camera motion from odometry, kinematics or an estimate), never ground truth.

The previous output is carried along the optical flow between the two frames' images (OpenCV's DIS, a few ms at
320x256), so each pixel takes the depth of the surface point it shows, whatever moved it: an error in the camera's
motion does not misplace it, and a moving instrument's depth goes with the instrument. The camera's motion then
moves each carried depth value (a point the camera approached is nearer now).
First, the new depth's scale is pulled toward the carried output's (`scale_weight`, in log space) where the two
differ by less than `tolerance`: a relative network's scale, or a stereo scale, that jitters between frames is held,
while a lasting change still comes through.
Each pixel then takes the carried output's share `weight` where the two agree, less as they differ, and none where
they differ by `tolerance` (relative) or more: there the new depth passes through unchanged, so occlusions,
instruments the flow lost and a large change are neither smeared nor lagged. Pixels a mask marks (instruments) are
never blended.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from .names import TEMPORAL_SCALE_WEIGHT, TEMPORAL_TOLERANCE, TEMPORAL_WEIGHT

TEMPORAL_GRID_PIXELS = 320 * 256  # the most pixels a live node's stabiliser carries per frame (stabilise_on_grid)


def gray(image: np.ndarray) -> np.ndarray:
    """(H,W) uint8 of an RGB (H,W,3) or grey (H,W) uint8 image."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def carry_depth(depth: np.ndarray, flow: np.ndarray, K: np.ndarray, T: np.ndarray) -> np.ndarray:
    """depth (H,W) of the previous frame (<= 0: none) seen in the current one: flow (H,W,2) takes each current pixel
    x to the previous frame's pixel x + flow(x) that shows the same point, T (4,4) the previous camera's points into
    the current one's (same length unit as depth), K (3,3) pixels of both. Returns (H,W) depth, 0 where the flow
    leaves the previous frame or finds no depth there."""
    height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    flow = np.asarray(flow, np.float32)
    map_u, map_v = u + flow[..., 0], v + flow[..., 1]
    z = cv2.remap(np.nan_to_num(depth, nan=0.0).astype(np.float32), map_u, map_v, cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    rays = np.linalg.inv(K) @ np.stack([map_u.ravel(), map_v.ravel(), np.ones(map_u.size, np.float32)])
    moved_z = (T[2, :3] @ rays).reshape(height, width) * z + T[2, 3]  # the points' depth in the current camera
    inside = (map_u >= 0) & (map_u <= width - 1) & (map_v >= 0) & (map_v <= height - 1) & (z > 0) & (moved_z > 0)
    return np.where(inside, moved_z, 0.0).astype(np.float32)


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
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self.previous: np.ndarray | None = None
        self.previous_image: np.ndarray | None = None  # grey (H,W) uint8

    def reset(self) -> None:
        """Forget the previous output (time went back, a new sequence)."""
        self.previous = self.previous_image = None

    def __call__(self, depth: np.ndarray, image: np.ndarray, K: np.ndarray, motion: np.ndarray | None,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(stabilised depth (H,W), the fraction of pixels blended) of a new depth (H,W) and its frame's image (H,W,3)
        RGB or (H,W) grey uint8; motion (4,4): the previous camera's points into this one's (None: unknown, nothing
        is carried); mask (H,W) bool: pixels never blended (instruments)."""
        depth, image = np.asarray(depth, np.float32), gray(np.asarray(image, np.uint8))
        if image.shape != depth.shape:
            raise ValueError(f"image {image.shape[:2]} and depth {depth.shape} differ in size")
        previous, previous_image = self.previous, self.previous_image
        self.previous, self.previous_image = depth.copy(), image
        if previous is None or motion is None or previous.shape != depth.shape or not self.weight:
            return depth, 0.0
        flow = self.flow.calc(image, previous_image, None)  # current pixel x shows previous pixel x + flow(x)
        carried = carry_depth(previous, flow, K, motion)
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


def stabilise_on_grid(stabiliser: DepthStabiliser, depth: torch.Tensor, image: np.ndarray, K: np.ndarray,
                      motion: np.ndarray | None, mask: np.ndarray | None = None,
                      pixels: int = TEMPORAL_GRID_PIXELS) -> tuple[torch.Tensor, float]:
    """A live node's stabiliser at a bounded cost: `stabiliser` runs on every k-th pixel of depth (H,W) metres (a
    tensor on any device; k so that at most `pixels` remain) with image (H,W,3) RGB uint8 shrunk to that grid, K
    (3,3) scaled to it and mask (h,w) bool (never blended; any size, a segmentation's own) resized to it, and its
    correction (stabilised / new) is carried back to every pixel of its k x k block.
    The node's depth is upsampled from the network's resolution, so the grid loses little. Returns (stabilised
    depth (H,W) on depth's device, the fraction of grid pixels blended)."""
    height, width = depth.shape
    k = max(1, math.ceil(math.sqrt(height * width / pixels)))
    grid = depth[::k, ::k].float().cpu().numpy()
    grid_image = cv2.resize(gray(image), grid.shape[::-1], interpolation=cv2.INTER_AREA) if k > 1 else image
    grid_K = np.array(K, dtype=np.float64)
    grid_K[:2] /= k  # grid pixel u' is pixel k*u': the same rays with fx/k, cx/k
    if mask is not None:
        mask = cv2.resize(mask.astype(np.uint8), grid.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    stabilised, blended = stabiliser(grid, grid_image, grid_K, motion, mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        correction = np.where(grid > 0, stabilised / grid, 1.0).astype(np.float32)
    correction = torch.from_numpy(correction).to(depth.device)
    correction = correction.repeat_interleave(k, 0).repeat_interleave(k, 1)[:height, :width]
    return depth * correction, blended
