"""Pictures of depth for people: colour maps shared by `dares infer`, the node and the demo."""

from __future__ import annotations

import cv2
import numpy as np


def colorize_inverse_depth(depth: np.ndarray) -> np.ndarray:
    """BGR turbo colour map of 1/depth, robustly normalised (near = warm)."""
    inv = 1.0 / depth
    valid = np.isfinite(inv)
    if not valid.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    lo, hi = np.percentile(inv[valid], (2, 98))
    norm = np.clip((inv - lo) / max(hi - lo, 1e-12), 0, 1)
    return cv2.applyColorMap(np.round(np.nan_to_num(norm) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
