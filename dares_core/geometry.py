"""Camera geometry shared by training, inference, stereo scale and the synthetic scenes.

Conventions: pinhole intrinsics K (3x3) in pixels, optical frame (x right, y down, z forward),
poses as 4x4 rigid transforms. Plain tensor code in the style of monodepth2's layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def disparity_to_depth(disparity: torch.Tensor, fx: float, baseline: float) -> torch.Tensor:
    """Stereo disparity (pixels) to depth (units of `baseline`): depth = fx * B / d; NaN where d <= 0.

    This is the one disparity -> depth conversion of the project; everyone calls it.
    """
    valid = disparity > 0
    depth = fx * baseline / torch.where(valid, disparity, torch.ones_like(disparity))
    return torch.where(valid, depth, torch.full_like(depth, float("nan")))


def sigmoid_to_depth(sigmoid: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Network sigmoid output to (scaled disparity, depth), as monodepth2/DARES `disp_to_depth`."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * sigmoid
    return scaled_disp, 1.0 / scaled_disp


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics for an image resized by (sx, sy); K: (...,3,3)."""
    S = torch.tensor([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]], dtype=K.dtype, device=K.device)
    return S @ K


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates (3, H*W): rows (u, v, 1), u along width."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width, device=device, dtype=dtype)])


def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Depth (B,1,H,W) and K (B,3,3) to camera-frame points (B,3,H,W), same units as depth."""
    b, _, h, w = depth.shape
    rays = torch.linalg.inv(K) @ pixel_grid(h, w, depth.device, depth.dtype)  # (B,3,HW)
    return (rays * depth.reshape(b, 1, -1)).reshape(b, 3, h, w)


def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply rigid transforms T (B,4,4) to points (B,3,H,W)."""
    b, _, h, w = points.shape
    p = points.reshape(b, 3, -1)
    return (T[:, :3, :3] @ p + T[:, :3, 3:]).reshape(b, 3, h, w)


def project(points: torch.Tensor, K: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Camera-frame points (B,3,H,W) to pixel coordinates (B,H,W,2) as (u, v)."""
    b, _, h, w = points.shape
    cam = K @ points.reshape(b, 3, -1)
    uv = cam[:, :2] / (cam[:, 2:3] + eps)
    return uv.reshape(b, 2, h, w).permute(0, 2, 3, 1)


def sample_at_pixels(image: torch.Tensor, uv: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinearly sample image (B,C,H,W) at pixel coordinates uv (B,h,w,2) -> (B,C,h,w)."""
    _, _, h, w = image.shape
    grid = torch.stack([uv[..., 0] / (w - 1), uv[..., 1] / (h - 1)], dim=-1) * 2 - 1
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def warp_to_target(
    source: torch.Tensor, target_depth: torch.Tensor, K: torch.Tensor, T_source_from_target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample `source` (B,C,H,W) into the target view using target depth (B,1,H,W).

    Returns (warped image (B,C,H,W), in-bounds mask (B,1,H,W)).
    """
    points = transform_points(T_source_from_target, backproject(target_depth, K))
    uv = project(points, K)
    _, _, h, w = source.shape
    inside = (uv[..., 0] >= 0) & (uv[..., 0] <= w - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= h - 1)
    inside = inside & (points[:, 2] > 0)
    return sample_at_pixels(source, uv), inside.unsqueeze(1).to(source.dtype)
