"""The deployment path: images -> preprocess -> merged network -> disparity and depth, on one device."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import DaresError
from .geometry import sigmoid_to_depth
from .model.depth_net import DaresDepthNet

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N`; a clear error when CUDA is asked for and absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DaresError(f"device {name!r} asked for but CUDA is not available here: pass --device cpu")
    return device


@dataclass
class Prediction:
    """disparity: (B,h,w) at network resolution (DARES: scaled disparity 1/depth, as official eval saves it);
    depth: (B,H,W) at input resolution in the model's units (nominal mm for DARES; NaN where invalid)."""

    disparity: torch.Tensor
    depth: torch.Tensor


class DepthPredictor:
    """Runs a depth network for deployment: LoRA merged, full-resolution head only, inference mode,
    channels-last memory (faster convolutions on CPU and GPU), optional fp16/bf16 autocast."""

    def __init__(self, net: DaresDepthNet, input_size=(256, 320), device="cpu", precision="fp32",
                 min_depth: float = 0.1, max_depth: float = 150.0, channels_last: bool = True):
        if precision not in PRECISIONS:
            raise DaresError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.merge_lora().to(self.device, memory_format=self.memory_format).eval()
        self.size = tuple(input_size)
        self.dtype = PRECISIONS[precision]
        self.min_depth, self.max_depth = min_depth, max_depth

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> Prediction:
        """images: (B,H,W,3) uint8 RGB, any device."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise DaresError(f"expected (B,H,W,3) uint8 RGB images, got {tuple(images.shape)} {images.dtype}")
        height, width = images.shape[1:3]
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        if (height, width) != self.size:
            x = F.interpolate(x, self.size, mode="bilinear", align_corners=False, antialias=True)
        x = x.contiguous(memory_format=self.memory_format)
        with self._autocast():
            out = self.net(x, scales=(0,))[0].float()
        if self.net.config.mode == "dares":
            disparity, _ = sigmoid_to_depth(out, self.min_depth, self.max_depth)
        else:
            disparity = out
        # as the SCARED protocol: resize disparity to the image, then invert
        full = disparity if (height, width) == self.size else F.interpolate(
            disparity, (height, width), mode="bilinear", align_corners=False)
        full = full[:, 0]
        depth = torch.where(full > 0, 1.0 / full.clamp_min(1e-12), torch.full_like(full, float("nan")))
        return Prediction(disparity=disparity[:, 0], depth=depth)
