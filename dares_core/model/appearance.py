"""AF-SfMLearner's appearance-flow modules: the position (optical flow) and transform (brightness) decoders.

Layouts match the released `position.pth` / `transform.pth`: the layers sit in `decoder` in the order
upconv(4,0), upconv(4,1), ..., upconv(0,1), then one output conv per scale.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pose_net import NUM_CH_ENC

NUM_CH_DEC = (16, 32, 64, 128, 256)


class Conv3x3(nn.Module):
    """Reflection-padded 3x3 convolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(int(cin), int(cout), 3)

    def forward(self, x):
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Conv3x3 + ELU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = Conv3x3(cin, cout)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x):
        return self.nonlin(self.conv(x))


class _UNetDecoder(nn.Module):
    """U-Net decoder over ResnetEncoder features with one output head per scale (subclasses make the heads).

    Layers are addressed by name as in monodepth2 (`self.convs[("upconv", i, j)]`, `self.convs[("head", s)]`)
    and registered in `decoder` in the released order, so `position.pth`/`transform.pth` keys stay
    `decoder.N.*`."""

    def __init__(self, num_ch_enc=NUM_CH_ENC, scales=(0, 1, 2, 3)):
        super().__init__()
        self.scales = tuple(scales)
        convs = {}
        for i in range(4, -1, -1):
            cin = num_ch_enc[-1] if i == 4 else NUM_CH_DEC[i + 1]
            convs[("upconv", i, 0)] = ConvBlock(cin, NUM_CH_DEC[i])
            convs[("upconv", i, 1)] = ConvBlock(NUM_CH_DEC[i] + (num_ch_enc[i - 1] if i > 0 else 0), NUM_CH_DEC[i])
        for s in self.scales:
            convs[("head", s)] = self.make_head(NUM_CH_DEC[s])
        self.decoder = nn.ModuleList(convs.values())
        self.convs = convs  # a plain dict of the same modules: names for reading, `decoder` for the state dict

    def make_head(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def head(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)

    def forward(self, features: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        """{scale: output at 1/2^scale of the input resolution}."""
        out, x = {}, features[-1]
        for i in range(4, -1, -1):
            x = [F.interpolate(self.convs[("upconv", i, 0)](x), scale_factor=2, mode="nearest")]
            if i > 0:
                x.append(features[i - 1])
            x = self.convs[("upconv", i, 1)](torch.cat(x, 1))
            if i in self.scales:
                out[i] = self.head(self.convs[("head", i)], x)
        return out


class PositionDecoder(_UNetDecoder):
    """Optical flow (B,2,h,w) in pixels (channel 0 along rows, 1 along columns, as AF-SfMLearner)."""

    def make_head(self, channels):
        conv = nn.Conv2d(channels, 2, 3, padding=1)
        nn.init.normal_(conv.weight, 0, 1e-5)  # start near zero flow
        nn.init.zeros_(conv.bias)
        return conv


class TransformDecoder(_UNetDecoder):
    """Brightness/appearance change (B,3,h,w) in [-1, 1] (tanh)."""

    def make_head(self, channels):
        return Conv3x3(channels, 3)

    def head(self, module, x):
        return torch.tanh(module(x))
