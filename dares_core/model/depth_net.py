"""The DARES depth network: Depth Anything V2 (transformers) with Vector-LoRA (peft) and a multi-scale head.

Numerically the network of the official DARES code (mobarakol/DARES `networks/dares.py`): the DAv2
DINOv2 backbone and DPT neck from transformers, LoRA B·A added to the q and v projections of every block
with no scaling (alpha = rank), and the DPT head ending in a sigmoid, applied to the four fused neck levels
for disparities at H, H/2, H/4 and H/8.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

from ..errors import DaresError

# Depth Anything V2 encoders: DINOv2 size, the blocks the DPT neck reads, neck widths.
ENCODERS = {
    "vits": dict(hidden_size=384, layers=12, heads=6, out_indices=[3, 6, 9, 12], fusion=64, neck=[48, 96, 192, 384]),
    "vitb": dict(hidden_size=768, layers=12, heads=12, out_indices=[3, 6, 9, 12], fusion=128, neck=[96, 192, 384, 768]),
    "vitl": dict(hidden_size=1024, layers=24, heads=16, out_indices=[5, 12, 18, 24], fusion=256,
                 neck=[256, 512, 1024, 1024]),
}
PAPER_RANKS_VITS = [14, 14, 12, 12, 10, 10, 8, 8, 8, 8, 8, 8]
LORA_TARGETS = {"q": "q_proj", "k": "k_proj", "v": "v_proj"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = ("dares", "zero_shot")
POSITION_EMBEDDINGS = ("official", "exact")


def linear_ranks(num_layers: int, r_max: int = 14, r_min: int = 8) -> list[int]:
    """Vector-LoRA ranks falling linearly from r_max (first block) to r_min (last block)."""
    if num_layers == 1:
        return [r_max]
    return [round(r_max - (r_max - r_min) * i / (num_layers - 1)) for i in range(num_layers)]


def default_ranks(encoder: str, num_layers: int) -> list[int]:
    """The paper's ranks for ViT-S, the linear rule for every other encoder."""
    return list(PAPER_RANKS_VITS) if encoder == "vits" and num_layers == 12 else linear_ranks(num_layers)


def hf_config_for(encoder: str) -> dict:
    """The transformers DepthAnythingConfig (as a dict) of a Depth Anything V2 encoder."""
    if encoder not in ENCODERS:
        raise DaresError(f"unknown encoder {encoder!r}: choose one of {', '.join(ENCODERS)}")
    e = ENCODERS[encoder]
    backbone = dict(
        model_type="dinov2", hidden_size=e["hidden_size"], num_hidden_layers=e["layers"],
        num_attention_heads=e["heads"], mlp_ratio=4, image_size=518, patch_size=14, layerscale_value=1.0,
        out_indices=e["out_indices"], apply_layernorm=True, reshape_hidden_states=False,
    )
    return dict(
        backbone_config=backbone, reassemble_hidden_size=e["hidden_size"], patch_size=14,
        fusion_hidden_size=e["fusion"], neck_hidden_sizes=e["neck"], head_hidden_size=32,
        depth_estimation_type="relative",
    )


@dataclass
class DepthNetConfig:
    """Everything needed to rebuild a depth network; stored inside our checkpoints as JSON.

    mode: "dares" (sigmoid disparity, multi-scale, input in [0,1] as the official trainer feeds it) or
    "zero_shot" (plain Depth Anything V2 relative inverse depth, ImageNet-normalised input).
    lora_ranks: one rank per ViT block; empty for no adapters. merged: adapters folded into the weights.
    input_size: (height, width) in pixels the network was trained at; None for files that do not record it
    (official DARES and Depth Anything V2 releases), which run at DEFAULT_INPUT_SIZE.
    position_embeddings: how the DINOv2 position embeddings are resized to the input, part of what a network
    was trained with: "official" (official_position_embeddings: DINOv2, Depth Anything V2, DARES) or "exact"
    (transformers 5's own; our checkpoints written before this was recorded were trained with it).
    depth_unit_mm: millimetres per unit of the network's depth: 1 for DARES (nominal mm, up to scale); stereo
    training with a nominal baseline learns depth in (calibrated / nominal baseline) mm, recorded here.
    """

    encoder: str = "vits"
    mode: str = "dares"
    lora_ranks: list[int] = field(default_factory=list)
    lora_targets: list[str] = field(default_factory=lambda: ["q", "v"])
    merged: bool = False
    hf_config: dict = field(default_factory=dict)
    input_size: list[int] | None = None
    position_embeddings: str = "official"
    depth_unit_mm: float = 1.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise DaresError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if not self.depth_unit_mm > 0:
            raise DaresError(f"depth_unit_mm {self.depth_unit_mm}: must be positive (millimetres per depth unit)")
        if self.position_embeddings not in POSITION_EMBEDDINGS:
            raise DaresError(f"unknown position_embeddings {self.position_embeddings!r}: choose one of "
                             f"{', '.join(POSITION_EMBEDDINGS)}")
        if not self.hf_config:
            self.hf_config = hf_config_for(self.encoder)
        bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if bad:
            raise DaresError(f"unknown LoRA target(s) {bad}: choose from {', '.join(LORA_TARGETS)}")

    @classmethod
    def dares(cls, encoder: str = "vits", ranks: list[int] | None = None, targets=("q", "v"), hf_config=None):
        """A DARES network config with the default Vector-LoRA ranks for `encoder` unless `ranks` is given."""
        hf = hf_config or hf_config_for(encoder)
        layers = hf["backbone_config"]["num_hidden_layers"]
        ranks = list(ranks) if ranks is not None else default_ranks(encoder, layers)
        if ranks and len(ranks) != layers:
            raise DaresError(f"{len(ranks)} LoRA ranks given for {layers} ViT blocks: give one rank per block")
        return cls(encoder=encoder, mode="dares", lora_ranks=ranks, lora_targets=list(targets), hf_config=hf)

    @property
    def num_layers(self) -> int:
        return self.hf_config["backbone_config"]["num_hidden_layers"]

    @property
    def has_adapters(self) -> bool:
        return bool(self.lora_ranks) and not self.merged

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DepthNetConfig:
        """A config as to_json wrote it; one that records no position_embeddings predates them: "exact"."""
        return cls(**{"position_embeddings": "exact", **json.loads(text)})


def official_position_embeddings(embeddings: nn.Module, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """DINOv2 position embeddings (1,1+h*w,C) for a height x width image (pixels) as the official DINOv2, Depth
    Anything V2 and DARES code computes them: bicubic by the scale factor (patches + 0.1) / grid. transformers 5
    resizes to the exact size instead (3e-4 relative in disparity); written here because it no longer offers this.
    embeddings: the backbone's Dinov2Embeddings; tokens: (B,1+h*w,C) the patch tokens with the class token."""
    table = embeddings.position_embeddings
    positions = table.shape[1] - 1
    if tokens.shape[1] - 1 == positions and height == width:
        return table
    grid = int(math.sqrt(positions))
    patch = embeddings.config.patch_size
    rows, cols = int(height) // patch + 0.1, int(width) // patch + 0.1  # plain numbers, also when traced
    patches = table[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), scale_factor=(rows / grid, cols / grid), mode="bicubic",
                            align_corners=False).to(table.dtype)
    return torch.cat([table[:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, table.shape[-1])], dim=1)


class DaresDepthNet(nn.Module):
    """Depth Anything V2 backbone + DPT neck + head, optionally with Vector-LoRA adapters.

    forward(images (B,3,H,W) in [0,1]) -> {scale: disparity (B,1,H/2^s,W/2^s)}; dares mode gives the
    sigmoid disparity of the official trainer, zero_shot mode DAv2's relative inverse depth.
    """

    def __init__(self, config: DepthNetConfig):
        super().__init__()
        self.config = config
        hf = DepthAnythingForDepthEstimation(DepthAnythingConfig(**config.hf_config))
        self.patch_size = hf.config.patch_size
        self.backbone, self.neck, self.head = hf.backbone, hf.neck, hf.head
        if config.position_embeddings == "official":
            self.backbone.embeddings.interpolate_pos_encoding = types.MethodType(official_position_embeddings,
                                                                                 self.backbone.embeddings)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if config.has_adapters:
            self._inject_lora()

    def _lora_patterns(self) -> dict[str, int]:
        return {
            f"encoder.layer.{i}.attention.{LORA_TARGETS[t]}": r
            for i, r in enumerate(self.config.lora_ranks)
            for t in self.config.lora_targets
        }

    def _inject_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        patterns = self._lora_patterns()
        first = self.config.lora_ranks[0]
        lora = LoraConfig(
            r=first, lora_alpha=first, lora_dropout=0.0, bias="none",
            target_modules=[LORA_TARGETS[t] for t in self.config.lora_targets],
            rank_pattern=patterns, alpha_pattern=dict(patterns),  # alpha = rank: scaling 1, as official B·A
        )
        inject_adapter_in_model(lora, self.backbone)

    def merge_lora(self) -> DaresDepthNet:
        """Fold every LoRA B·A into its base weight and drop peft's wrappers; output is unchanged."""
        if not self.config.has_adapters:
            return self
        from peft.tuners.lora import LoraLayer

        for name, module in list(self.backbone.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(self.backbone.get_submodule(parent), child, module.get_base_layer())
        self.config.merged = True
        return self

    def trainable_parameters(self, train_backbone: bool = False) -> list[nn.Parameter]:
        """Freeze the foundation model: adapters, neck and head train (everything with train_backbone)."""
        for name, p in self.named_parameters():
            p.requires_grad = train_backbone or not name.startswith("backbone.") or "lora_" in name
        return [p for p in self.parameters() if p.requires_grad]

    def _disparity(self, feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(self.head.conv1(feature), size, mode="bilinear", align_corners=True)
        x = self.head.conv3(self.head.activation1(self.head.conv2(x)))
        return torch.sigmoid(x) if self.config.mode == "dares" else F.relu(x)

    def forward(self, images: torch.Tensor, scales: tuple[int, ...] = (0,)) -> dict[int, torch.Tensor]:
        if self.config.mode == "zero_shot":
            images = (images - self.mean) / self.std
        height, width = images.shape[-2:]
        features = self.backbone(images).feature_maps
        fused = self.neck(list(features), height // self.patch_size, width // self.patch_size)
        # fused[3] is the finest level; scale s uses fused[3 - s] at 1/2^s resolution, as official
        return {s: self._disparity(fused[3 - s], (int(height / 2**s), int(width / 2**s))) for s in scales}
