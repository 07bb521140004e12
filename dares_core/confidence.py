"""A per-pixel confidence of predicted depth, in [0,1] (higher: more trusted), and how the uncertainty literature
scores one: the sparsification curve and its AUSE (Ilg et al. 2018; Poggi et al., CVPR 2020).

No retraining, so official DARES weights get a confidence too. Computed at the network's resolution (at most
WORK_ROWS rows), then resized:

    confidence = exp(-(edge / EDGE_SCALE + photometric / PHOTO_SCALE))

- edge: |grad log depth| per network pixel (Sobel, blurred over BLUR_PX). The network blurs depth across occluding
  boundaries (instruments, folds, the lumen's rim), so depth next to them is least trusted. Mono and stereo.
- photometric, with a rectified pair and a metric scale (the depth node in stereo mode): the SSIM + L1 error of the
  right image warped onto the left by the disparity fx * baseline / depth, blurred the same. Where depth is wrong
  the warp misaligns the tissue's texture. A pixel the right eye cannot see is unverified: it counts one
  PHOTO_SCALE (its confidence is at most 1/e).

The constants were chosen on synthetic tuning seeds 201-204 with the demo model (`dares bench confidence` scores
other seeds). What was tried and left out: left/right flip consistency (no signal: 1.02 of random's AUSE), the
disagreement of two input sizes (0.80), the photometric error of the neighbouring video frames through the pose
network (0.79: too little motion between frames), and image cues (specular highlights, low texture: worse than
random)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .geometry import pixel_grid, sample_at_pixels
from .losses import reprojection_loss

EDGE_SCALE = 0.1  # |grad log depth| per network pixel at which the edge term alone gives confidence 1/e
PHOTO_SCALE = 0.05  # SSIM + L1 error at which the photometric term alone gives confidence 1/e
BLUR_PX = 1.0  # Gaussian sigma of both terms, pixels of the work size
WORK_ROWS = 128  # computed at the network's resolution, at most this many rows (the errors it ranks are smooth)
SPARSIFICATION_STEP = 0.02  # the curve removes this fraction of pixels at a time


# Fixed kernels, applied by hand: kornia's gaussian_blur2d and spatial_gradient build theirs on every call (6 of
# 7 ms, and 3 of 3.4 ms, at 128x160 on a 2-core CPU).
_TAPS = torch.exp(-torch.arange(-2.0, 3.0) ** 2 / (2 * BLUR_PX**2))
_TAPS = _TAPS / _TAPS.sum()
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8  # per pixel, as normalised Sobel
_SOBEL = torch.stack([_SOBEL, _SOBEL.T])[:, None]  # (2,1,3,3): d/du, d/dv


def _blur(x: torch.Tensor) -> torch.Tensor:
    """(B,1,h,w) Gaussian-blurred (sigma BLUR_PX, 5 taps, borders replicated)."""
    taps = _TAPS.to(x)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), taps.view(1, 1, 1, 5))
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), taps.view(1, 1, 5, 1))


def edge_term(disparity: torch.Tensor) -> torch.Tensor:
    """disparity: (B,h,w) positive, at the network's resolution -> (B,h,w) |grad log depth| per pixel, blurred
    (log depth's gradient is log disparity's, negated: no depth unit or scale enters)."""
    log = disparity.clamp_min(1e-12).log()[:, None]
    grad = F.conv2d(F.pad(log, (1, 1, 1, 1), mode="replicate"), _SOBEL.to(log))  # (B,2,h,w), per pixel
    return _blur(torch.hypot(grad[:, :1], grad[:, 1:]))[:, 0]  # not .norm(dim=1): 3 ms here on a CPU


def photometric_term(target: torch.Tensor, source: torch.Tensor, depth: torch.Tensor, fx: float, baseline: float,
                     source_is_right: bool = True) -> torch.Tensor:
    """target, source: (B,3,h,w) in [0,1], the two eyes of a rectified pair at the network's resolution (target:
    the eye whose depth is judged); depth: (B,h,w) the target's, in the unit of `baseline`; fx: pixels at that
    resolution -> (B,h,w) the blurred SSIM + L1 error of the source warped onto the target by the disparity
    fx * baseline / depth (PHOTO_SCALE where the source eye cannot see)."""
    b, _, h, w = target.shape
    uv = pixel_grid(h, w, target.device)[:2].reshape(2, h, w).permute(1, 2, 0)[None].repeat(b, 1, 1, 1)
    shift = fx * baseline / depth.clamp_min(1e-9)
    uv[..., 0] = uv[..., 0] - shift if source_is_right else uv[..., 0] + shift
    error = reprojection_loss(sample_at_pixels(source, uv), target, "ssim")[:, 0]
    seen = (uv[..., 0] >= 0) & (uv[..., 0] <= w - 1) & torch.isfinite(depth)
    return _blur(torch.where(seen, error, torch.full_like(error, PHOTO_SCALE))[:, None])[:, 0]


@dataclass(frozen=True)
class StereoPair:
    """What the photometric term needs: target, source (H,W,3) uint8, the rectified pair's two eyes (target: the eye
    whose depth is judged), fx pixels at (H,W), baseline m, metres_per_unit: depth m = metres_per_unit / the
    network's disparity, source_is_right: the source is the right eye."""

    target: np.ndarray
    source: np.ndarray
    fx: float
    baseline: float
    metres_per_unit: float
    source_is_right: bool = True


def work_size(size: tuple[int, int]) -> tuple[int, int]:
    """(h,w) the confidence is computed at for a network output of `size`: that size, at most WORK_ROWS rows."""
    h, w = size
    return (h, w) if h <= WORK_ROWS else (WORK_ROWS, max(1, round(w * WORK_ROWS / h)))


def _resized(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)


def confidence(disparity: torch.Tensor, size: tuple[int, int] | None = None,
               stereo: StereoPair | None = None) -> torch.Tensor:
    """disparity: (B,h,w) the network's (any positive inverse depth), at its resolution; size: (H,W) to resize to
    (default (h,w)); stereo: with a StereoPair (B 1) the photometric term too, else (mono) the edge term alone ->
    (B,H,W) float32 in [0,1] on disparity's device."""
    size = tuple(size or disparity.shape[-2:])
    work = work_size(disparity.shape[-2:])
    disparity = _resized(disparity.float()[:, None], work)[:, 0]
    uncertainty = edge_term(disparity) / EDGE_SCALE
    if stereo is not None:
        def eye(image: np.ndarray) -> torch.Tensor:  # resized where it lies, in uint8 (the node's are host images)
            small = cv2.resize(image, work[::-1], interpolation=cv2.INTER_AREA)
            return torch.from_numpy(small).to(disparity.device).permute(2, 0, 1)[None].float().div_(255)

        fx = stereo.fx * work[1] / stereo.target.shape[1]
        depth = stereo.metres_per_unit / disparity.clamp_min(1e-12)
        uncertainty = uncertainty + photometric_term(eye(stereo.target), eye(stereo.source), depth, fx,
                                                     stereo.baseline, stereo.source_is_right) / PHOTO_SCALE
    out = torch.exp(-uncertainty)
    if tuple(out.shape[-2:]) != size:
        out = F.interpolate(out[:, None], size, mode="bilinear", align_corners=False)[:, 0]
    return out.clamp_(0, 1)


def sparsification(errors: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The mean of `errors` (N,) left after removing the first k of `order` (indices, first removed first), for
    k = 0, 2 %, ..., 98 % of N -> (50,)."""
    kept = np.cumsum(errors[order][::-1])[::-1]  # kept[k]: sum of errors[order[k:]]
    removed = (np.arange(0, 1, SPARSIFICATION_STEP) * len(errors)).astype(int)
    return kept[removed] / (len(errors) - removed)


def ause(errors: np.ndarray, confidence_values: np.ndarray) -> dict:
    """One frame's sparsification scores of a confidence: errors (N,) per-pixel AbsRel, confidence_values (N,)
    -> {"ause": mean gap of its curve (least confident removed first) over the oracle's (largest error first),
    "ause_random": the same for a random confidence (the flat curve at the mean error), "curve", "oracle"}.
    ause / ause_random: 1 is chance, 0 the oracle."""
    errors = np.asarray(errors, np.float64)
    oracle = sparsification(errors, np.argsort(-errors, kind="stable"))
    ties = np.random.default_rng(0).random(errors.size)  # equal confidences go in a random order, not the pixels'
    curve = sparsification(errors, np.lexsort((ties, np.asarray(confidence_values))))
    return {"ause": float(np.mean(curve - oracle)), "ause_random": float(np.mean(errors.mean() - oracle)),
            "curve": curve, "oracle": oracle}
