"""Losses and geometry of the method: MS-SSIM at any training size, flow warping, occlusion, poses."""

import pytest
import torch

from dares_core.geometry import occlusion_mask, pose_from_axisangle, warp_by_flow
from dares_core.losses import ms_ssim_betas, reprojection_loss, smoothness_loss


@pytest.mark.parametrize("size, scales", [((64, 96), 3), ((96, 128), 3), ((128, 160), 4), ((256, 320), 5)])
def test_ms_ssim_reprojection_works_at_every_training_size(size, scales):
    a = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    assert reprojection_loss(a, a).abs().max() < 1e-5
    assert reprojection_loss(a, torch.rand_like(a)).mean() > 0.3
    # torchmetrics' rule: as many scales as keep min side // (scales - 1)^2 above the 11-pixel kernel
    assert len(ms_ssim_betas(*size)) == scales
    assert sum(ms_ssim_betas(*size)) == pytest.approx(1.0001 if scales == 5 else 1.0, abs=1e-9)


def test_full_size_uses_the_official_five_weights_as_they_are():
    assert ms_ssim_betas(256, 320) == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def test_flow_warp_and_occlusion():
    image = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    flow = torch.zeros(1, 2, 16, 20)
    assert torch.allclose(warp_by_flow(image, flow, align_corners=True), image, atol=1e-5)
    # the official default (align_corners=False) samples column c at c * w/(w-1) - 1/2: not the identity
    col = torch.arange(20.0) * 20 / 19 - 0.5
    left = col.floor().clamp(0, 19).long()
    right = (left + 1).clamp(max=19)
    frac = (col - col.floor()).where(col >= 0, torch.zeros(20))
    expected = image[..., left] * (1 - frac) + image[..., right] * frac
    rows = torch.arange(16.0) * 16 / 15 - 0.5
    top = rows.floor().clamp(0, 15).long()
    bottom = (top + 1).clamp(max=15)
    rfrac = (rows - rows.floor()).where(rows >= 0, torch.zeros(16))[:, None]
    expected = expected[..., top, :] * (1 - rfrac) + expected[..., bottom, :] * rfrac
    assert torch.allclose(warp_by_flow(image, flow), expected, atol=1e-5)
    assert not torch.allclose(warp_by_flow(image, flow), image, atol=1e-2)
    flow[:, 1] = 2.0  # every pixel samples two columns to the right
    assert torch.allclose(warp_by_flow(image, flow, align_corners=True)[..., :-2], image[..., 2:], atol=1e-5)
    mask = occlusion_mask(flow)  # as a reverse flow: nothing lands on the two left columns
    assert (mask[..., :2] == 0).all() and (mask[..., 2:] == 1).all()


def test_pose_and_its_inverse_compose_to_identity():
    aa, t = torch.tensor([[0.1, -0.2, 0.05]]), torch.tensor([[1.0, 2.0, -3.0]])
    assert torch.allclose(pose_from_axisangle(aa, t) @ pose_from_axisangle(aa, t, invert=True), torch.eye(4), atol=1e-6)


def test_smoothness_is_edge_aware():
    disp = torch.zeros(1, 1, 8, 8)
    disp[..., 4:] = 1.0  # a disparity edge
    flat, edge = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    edge[..., 4:] = 1.0  # the image has the same edge
    assert smoothness_loss(disp, edge) < smoothness_loss(disp, flat)
