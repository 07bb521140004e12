"""Pictures of depth for people: colour maps shared by `dares infer`, the node and the demo, the demo's
side-by-side strips with a colour bar in millimetres, and an oblique render of a point cloud."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from .files import atomic_file

FONT = cv2.FONT_HERSHEY_SIMPLEX


def colorize_inverse_depth(depth) -> np.ndarray:
    """(H,W) depth, an array or a tensor on any device -> (H,W,3) uint8 BGR turbo map of 1/depth, normalised
    between the 2nd and 98th percentiles of every 4th pixel each way (near = warm). Normalised where it lies,
    so a GPU depth map crosses to the host as 1 byte per pixel."""
    inv = 1.0 / torch.as_tensor(depth, dtype=torch.float32)
    sample = inv[::4, ::4]
    sample = sample[torch.isfinite(sample)]
    if not sample.numel():
        return np.zeros((*inv.shape, 3), np.uint8)
    lo, hi = (sample.kthvalue(1 + round(q * (sample.numel() - 1))).values.item() for q in (0.02, 0.98))
    # in place: inv is ours
    level = inv.sub_(lo).mul_(255 / max(hi - lo, 1e-12)).clamp_(0, 255).nan_to_num_(0.0).round_()
    return cv2.applyColorMap(level.to(torch.uint8).cpu().numpy(), cv2.COLORMAP_TURBO)


def depth_range(*depths: np.ndarray) -> tuple[float, float]:
    """(near, far): the 2nd and 98th percentiles of the valid values of all `depths`, for one shared scale."""
    values = np.concatenate([d[np.isfinite(d) & (d > 0)].ravel() for d in depths])
    if not values.size:
        return 0.0, 1.0
    near, far = np.percentile(values, (2, 98))
    return float(near), float(max(far, near + 1e-6))


def colorize_depth(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """BGR turbo map of depth (H,W) on the fixed scale [near, far] (near = warm); invalid pixels black."""
    valid = np.isfinite(depth) & (depth > 0)
    norm = np.clip((far - np.nan_to_num(depth)) / (far - near), 0, 1)
    bgr = cv2.applyColorMap(np.round(norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    bgr[~valid] = 0
    return bgr


def color_bar(height: int, near: float, far: float, unit: str = "mm", width: int = 80) -> np.ndarray:
    """A vertical BGR colour bar (height,width,3) for colorize_depth's scale, near at the top, labelled."""
    bar = np.full((height, width, 3), 255, np.uint8)
    top, bottom = 14, height - 8
    ramp = np.linspace(near, far, bottom - top)[:, None].repeat(14, 1)
    bar[top:bottom, 6:20] = colorize_depth(ramp, near, far)
    for value in np.linspace(near, far, 5):
        y = int(round(top + (value - near) / (far - near) * (bottom - top - 1)))
        cv2.line(bar, (20, y), (25, y), (0, 0, 0), 1)
        cv2.putText(bar, f"{value:.0f}", (28, y + 4), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(bar, unit, (6, 10), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def titled(image: np.ndarray, title: str, bar_height: int = 20) -> np.ndarray:
    """`image` (BGR) under a white title bar."""
    head = np.full((bar_height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(head, title, (4, bar_height - 6), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([head, image])


def depth_strip(rgb: np.ndarray, predicted_mm: np.ndarray, gt_mm: np.ndarray | None, near: float, far: float,
                titles: bool = True, confidence: np.ndarray | None = None) -> np.ndarray:
    """One BGR row: input | predicted depth | ground-truth depth (when given) | confidence (when given: grey, white
    trusted, black not), the depths on one colour scale, then its bar."""
    panels = [("input (left eye)", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
              ("predicted depth", colorize_depth(predicted_mm, near, far))]
    if gt_mm is not None:
        panels.append(("ground-truth depth", colorize_depth(gt_mm, near, far)))
    if confidence is not None:
        grey = np.round(255 * np.nan_to_num(np.clip(confidence, 0, 1))).astype(np.uint8)
        panels.append(("confidence (white: trusted)", cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)))
    height, width = rgb.shape[:2]
    panels = [(t, cv2.resize(p, (width, height), interpolation=cv2.INTER_NEAREST)) for t, p in panels]
    row = np.hstack([titled(p, t) if titles else p for t, p in panels])
    return np.hstack([row, color_bar(row.shape[0], near, far)])


def render_point_cloud(points_mm: np.ndarray, rgb: np.ndarray, path: Path, title: str = "") -> None:
    """Scatter render of a coloured cloud from an oblique view, written atomically as PNG.

    points_mm: (N,3) camera optical frame (x right, y down, z forward), mm; rgb: (N,3) uint8.
    matplotlib (Agg): renders headless on any machine, where open3d's renderer needs EGL.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.add_subplot(projection="3d")
    # plot as (x, z, -y): depth recedes into the picture and up is up
    ax.scatter(points_mm[:, 0], points_mm[:, 2], -points_mm[:, 1], c=rgb / 255.0, s=3, linewidths=0, depthshade=False)
    ax.view_init(elev=20, azim=-40)
    ax.locator_params(nbins=4)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("depth z (mm)")
    ax.set_zlabel("-y (mm)")
    ax.set_box_aspect(np.ptp(points_mm[:, [0, 2, 1]], axis=0).clip(1e-6))
    if title:
        ax.set_title(title, fontsize=10)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
