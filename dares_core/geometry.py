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


def sample_at_pixels(image: torch.Tensor, uv: torch.Tensor, padding_mode: str = "border",
                     mode: str = "bilinear") -> torch.Tensor:
    """Sample image (B,C,H,W) at pixel coordinates uv (B,h,w,2) -> (B,C,h,w), bilinearly (or `mode`: nearest keeps
    depth edges from blending)."""
    _, _, h, w = image.shape
    grid = torch.stack([uv[..., 0] / (w - 1), uv[..., 1] / (h - 1)], dim=-1) * 2 - 1
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


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


def pose_from_axisangle(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """(B,3) axis-angle and (B,3) translation -> (B,4,4) transform, as monodepth2's transformation_from_parameters.

    Not inverted: T = [R | t] applied as rotate then translate; inverted: the inverse transform.
    """
    from kornia.geometry.conversions import axis_angle_to_rotation_matrix

    R = axis_angle_to_rotation_matrix(axisangle)
    t = translation
    if invert:
        R, t = R.transpose(1, 2), -(R.transpose(1, 2) @ t.unsqueeze(-1)).squeeze(-1)
    T = torch.eye(4, dtype=R.dtype, device=R.device).repeat(R.shape[0], 1, 1)
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    return T


def _flow_grid(flow: torch.Tensor) -> torch.Tensor:
    """Absolute (row, col) sample positions (B,2,H,W) for a flow (B,2,H,W) in pixels, channel 0 along rows."""
    _, _, h, w = flow.shape
    rows, cols = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                                torch.arange(w, device=flow.device, dtype=flow.dtype), indexing="ij")
    return torch.stack([rows, cols])[None] + flow


def warp_by_flow(image: torch.Tensor, flow: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Sample image (B,C,H,W) at pixel + flow (B,2,H,W; rows, cols), border padding, as AF-SfMLearner.

    Coordinates are normalised by (size - 1) as the official SpatialTransformer does, and sampled with
    grid_sample's default align_corners=False as it does too: then zero flow is not quite the identity (a
    half-pixel shift and a 1/(size-1) stretch), which is what the published models were trained with.
    align_corners=True matches sampling to that normalisation, so zero flow is the identity."""
    locs = _flow_grid(flow)
    _, _, h, w = flow.shape
    grid = torch.stack([2 * (locs[:, 1] / (w - 1) - 0.5), 2 * (locs[:, 0] / (h - 1) - 0.5)], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=align_corners)


def occlusion_mask(flow_reverse: torch.Tensor, threshold: float = 0.95) -> torch.Tensor:
    """(B,1,H,W) 1 where a target pixel is reached by the reverse flow (forward splatting of bilinear weights
    exceeds `threshold`), 0 where occluded. Written by hand: no library splats flow this way."""
    locs = _flow_grid(flow_reverse)
    b, _, h, w = flow_reverse.shape
    x, y = locs[:, 1].reshape(b, -1), locs[:, 0].reshape(b, -1)
    x0, y0 = torch.floor(x), torch.floor(y)
    coverage = torch.zeros(b, h * w, dtype=flow_reverse.dtype, device=flow_reverse.device)
    for xi in (x0, x0 + 1):
        for yi in (y0, y0 + 1):
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs()) * inside
            index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
            coverage.scatter_add_(1, index, weight)
    return (coverage.view(b, 1, h, w) > threshold).to(flow_reverse.dtype)
