"""ResNet-18 pair encoder and the Monodepth2 pose decoder, in the state-dict layouts of AF-SfMLearner/DARES.

The ResNet is written here (torchvision is not a dependency) with torchvision's module names, so the
released `pose_encoder.pth`, `position_encoder.pth` and `transform_encoder.pth` (keys `encoder.conv1.weight`,
`encoder.layer1.0.bn1.running_mean`, ..., `encoder.fc.weight`) load unchanged. `width` (64: ResNet-18, the
official layout) narrows every layer for small networks such as the shipped demo pose network; the keys stay.
"""

from __future__ import annotations

import torch
import torch.nn as nn

OFFICIAL_WIDTH = 64  # ResNet-18's first layer


def encoder_channels(width: int = OFFICIAL_WIDTH) -> tuple[int, ...]:
    """Channels of the five ResnetEncoder features: (64, 64, 128, 256, 512) at the official width."""
    return (width, width, 2 * width, 4 * width, 8 * width)


NUM_CH_ENC = encoder_channels()


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same attribute names)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18 layout with `3 * num_input_images` input channels, `width` channels in its first
    layer (fc kept for the key layout: official code loads these files strictly)."""

    def __init__(self, num_input_images: int = 1, width: int = OFFICIAL_WIDTH):
        super().__init__()
        c0, c1, c2, c3, c4 = encoder_channels(width)
        self.conv1 = nn.Conv2d(3 * num_input_images, c0, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(c0, c1), BasicBlock(c1, c1))
        self.layer2 = nn.Sequential(BasicBlock(c1, c2, 2), BasicBlock(c2, c2))
        self.layer3 = nn.Sequential(BasicBlock(c2, c3, 2), BasicBlock(c3, c3))
        self.layer4 = nn.Sequential(BasicBlock(c3, c4, 2), BasicBlock(c4, c4))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c4, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ResnetEncoder(nn.Module):
    """Features at 1/2, 1/4, 1/8, 1/16, 1/32 of a stack of `num_input_images` RGB images in [0,1] (no normalisation,
    as AF-SfMLearner/DARES feed it). forward(x (B,3n,H,W)) -> list of 5 tensors with `num_ch_enc` channels."""

    def __init__(self, num_input_images: int = 2, width: int = OFFICIAL_WIDTH):
        super().__init__()
        self.num_ch_enc = encoder_channels(width)
        self.encoder = ResNet18(num_input_images, width)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e = self.encoder
        f0 = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        return [f0, f1, f2, f3, e.layer4(f3)]


class PoseDecoder(nn.Module):
    """Monodepth2 pose decoder: (axis-angle (B,1,1,3), translation (B,1,1,3)), outputs scaled by 0.001.

    Layers live in `net` (squeeze, pose 0, pose 1, pose 2) as in the released `pose.pth`; `hidden` channels
    (256 official; four times the encoder width by convention).
    """

    def __init__(self, num_ch_enc=NUM_CH_ENC, num_input_features: int = 1, num_frames_to_predict_for: int = 2,
                 hidden: int = 256):
        super().__init__()
        self.frames = num_frames_to_predict_for
        self.net = nn.ModuleList([
            nn.Conv2d(num_ch_enc[-1], hidden, 1),
            nn.Conv2d(num_input_features * hidden, hidden, 3, 1, 1),
            nn.Conv2d(hidden, hidden, 3, 1, 1),
            nn.Conv2d(hidden, 6 * num_frames_to_predict_for, 1),
        ])
        self.relu = nn.ReLU()

    def forward(self, input_features: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        squeeze, *pose = self.net
        out = torch.cat([self.relu(squeeze(f[-1])) for f in input_features], 1)
        for i, conv in enumerate(pose):
            out = conv(out)
            if i < 2:
                out = self.relu(out)
        out = 0.001 * out.mean(3).mean(2).view(-1, self.frames, 1, 6)
        return out[..., :3], out[..., 3:]


def pose_network(width: int = OFFICIAL_WIDTH) -> tuple[ResnetEncoder, PoseDecoder]:
    """The pose pair encoder and its decoder at an encoder `width` (decoder hidden channels 4 * width)."""
    encoder = ResnetEncoder(2, width)
    return encoder, PoseDecoder(encoder.num_ch_enc, hidden=4 * width)
