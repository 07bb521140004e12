"""ResNet-18 pair encoder and the Monodepth2 pose decoder, in the state-dict layouts of AF-SfMLearner/DARES.

The ResNet is written here (torchvision is not a dependency) with torchvision's module names, so the
released `pose_encoder.pth`, `position_encoder.pth` and `transform_encoder.pth` (keys `encoder.conv1.weight`,
`encoder.layer1.0.bn1.running_mean`, ..., `encoder.fc.weight`) load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NUM_CH_ENC = (64, 64, 128, 256, 512)


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
    """torchvision's resnet18 layout with `3 * num_input_images` input channels (fc kept for the key layout)."""

    def __init__(self, num_input_images: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(3 * num_input_images, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ResnetEncoder(nn.Module):
    """Features at 1/2, 1/4, 1/8, 1/16, 1/32 of a stack of `num_input_images` RGB images in [0,1] (no normalisation,
    as AF-SfMLearner/DARES feed it). forward(x (B,3n,H,W)) -> list of 5 tensors with NUM_CH_ENC channels."""

    num_ch_enc = NUM_CH_ENC

    def __init__(self, num_input_images: int = 2):
        super().__init__()
        self.encoder = ResNet18(num_input_images)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e = self.encoder
        f0 = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        return [f0, f1, f2, f3, e.layer4(f3)]


class PoseDecoder(nn.Module):
    """Monodepth2 pose decoder: (axis-angle (B,1,1,3), translation (B,1,1,3)), outputs scaled by 0.001.

    Layers live in `net` (squeeze, pose 0, pose 1, pose 2) as in the released `pose.pth`.
    """

    def __init__(self, num_ch_enc=NUM_CH_ENC, num_input_features: int = 1, num_frames_to_predict_for: int = 2):
        super().__init__()
        self.frames = num_frames_to_predict_for
        self.net = nn.ModuleList([
            nn.Conv2d(num_ch_enc[-1], 256, 1),
            nn.Conv2d(num_input_features * 256, 256, 3, 1, 1),
            nn.Conv2d(256, 256, 3, 1, 1),
            nn.Conv2d(256, 6 * num_frames_to_predict_for, 1),
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
