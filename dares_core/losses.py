"""Self-supervised losses of DARES / AF-SfMLearner.

reprojection = 0.9 * (1 - MS-SSIM) + 0.1 * L1 (MS-SSIM from torchmetrics averaged over the batch, as the
official trainer computes it, over every process's batch under torch.distributed; L1 per pixel), or
Monodepth2's 0.85 * (1 - SSIM 3x3)/2 + 0.15 * L1 per pixel.
Smoothness terms are edge-aware: gradients are down-weighted where the image (or residual) changes.
"""

from __future__ import annotations

import torch
from kornia.metrics import ssim as kornia_ssim

from .distributed import all_reduce_sum, batch_mean, world_size

MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # torchmetrics' (and the official trainer's) weights


def ms_ssim_betas(height: int, width: int, kernel: int = 11) -> tuple[float, ...]:
    """The MS-SSIM weights for an image: torchmetrics' five as they are (sum 1.0001) wherever it accepts five
    scales, which the official 256x320 always does; for images too small for five (its rule: min side //
    max(1, scales - 1)^2 > kernel - 1), the first ones that fit, renormalised to sum to 1."""
    scales = max(n for n in range(1, 6) if min(height, width) // max(1, n - 1) ** 2 > kernel - 1)
    if scales == len(MS_SSIM_BETAS):
        return MS_SSIM_BETAS
    kept = MS_SSIM_BETAS[:scales]
    return tuple(b / sum(kept) for b in kept)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or in float64 when it is (reduced-precision autocast outputs go up, never fp64 down)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def reprojection_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "ms_ssim") -> torch.Tensor:
    """Photometric error (B,1,H,W) between images in [0,1]; kind: ms_ssim (DARES) or ssim (Monodepth2)."""
    l1 = (target - pred).abs().mean(1, keepdim=True)
    if kind == "l1":
        return l1
    if kind == "ssim":
        dssim = ((1 - kornia_ssim(pred, target, window_size=3, padding="valid")) / 2).mean(1, keepdim=True)
        dssim = torch.nn.functional.pad(dssim, (1, 1, 1, 1), mode="replicate")
        return 0.85 * dssim + 0.15 * l1
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure  # 2-3 s to import:
    # only where MS-SSIM is used (training), not for the depth node's confidence (SSIM)

    per_image = multiscale_structural_similarity_index_measure(
        at_least_fp32(pred), at_least_fp32(target), data_range=1.0, betas=ms_ssim_betas(*pred.shape[-2:]),
        reduction="none")
    return 0.9 * (1 - batch_mean(per_image)) + 0.1 * l1


def smoothness_loss(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware first-order smoothness of disp (B,1,H,W) guided by image (B,3,H,W)."""
    dx = (disp[..., :, :-1] - disp[..., :, 1:]).abs()
    dy = (disp[..., :-1, :] - disp[..., 1:, :]).abs()
    ix = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    iy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


def brightness_smoothness(transform: torch.Tensor, target: torch.Tensor, registered: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
    """Smoothness of the appearance change (B,3,H,W), edge-aware on the residual target - registered, over mask."""
    tx = (transform[..., :, :-1] - transform[..., :, 1:]).abs().mean(1, keepdim=True)
    ty = (transform[..., :-1, :] - transform[..., 1:, :]).abs().mean(1, keepdim=True)
    residual = target - registered
    rx = (residual[..., :, :-1] - residual[..., :, 1:]).abs().mean(1, keepdim=True)
    ry = (residual[..., :-1, :] - residual[..., 1:, :]).abs().mean(1, keepdim=True)
    return masked_mean(tx * torch.exp(-rx), mask[..., :, :-1]) + masked_mean(ty * torch.exp(-ry), mask[..., :-1, :])


def masked_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of loss (B,1,H,W) over mask (B,1,H,W) (no gradient through the mask) over the global batch: under
    torch.distributed each process returns its share times the world size, so the average over processes,
    as the trainer averages losses and gradients, is the mean over every process's masked pixels."""
    return (loss * mask).sum() * world_size() / all_reduce_sum(mask.sum().detach()).clamp_min(1)
