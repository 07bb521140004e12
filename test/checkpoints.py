"""Writers of checkpoints in the exact layouts users download, for the loader tests.

Each writer maps our transformers-5 names back to the published layout with its own table, written
independently of dares_core.model.weights, so a round trip checks the loader against the real layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

TRANSFORMERS4_NAMES = [
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
]
OFFICIAL_DARES_LORA_NAMES = [
    ("_proj.base_layer.", "_proj.w."),
    ("_proj.lora_A.default.", "_proj.linear_a."),
    ("_proj.lora_B.default.", "_proj.linear_b."),
]


def replace_in_keys(state: dict, pairs) -> dict:
    out = {}
    for k, v in state.items():
        for old, new in pairs:
            k = k.replace(old, new)
        out[k] = v
    return out


def to_transformers4(state: dict) -> dict:
    """transformers 5 Dinov2 names -> transformers 4 names (as on the hub and in DARES checkpoints)."""
    return replace_in_keys(state, TRANSFORMERS4_NAMES)


def write_hf_folder(model: DepthAnythingForDepthEstimation, folder: Path, legacy_names: bool = True) -> Path:
    """A Depth-Anything-V2-*-hf folder: config.json + model.safetensors (transformers-4 names, as on the hub)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if legacy_names:
        state = to_transformers4(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    return folder


def to_official_dav2(state: dict) -> dict:
    """transformers DepthAnything state -> official Depth-Anything-V2 `.pth` keys (fused qkv)."""
    out, qkv = {}, {}
    fusion = {3: 1, 2: 2, 1: 3, 0: 4}  # transformers fusion layer -> refinenet index
    for k, v in state.items():
        if m := re.match(r"backbone\.encoder\.layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)", k):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
            continue
        n = k
        n = n.replace("backbone.embeddings.cls_token", "pretrained.cls_token")
        n = n.replace("backbone.embeddings.mask_token", "pretrained.mask_token")
        n = n.replace("backbone.embeddings.position_embeddings", "pretrained.pos_embed")
        n = n.replace("backbone.embeddings.patch_embeddings.projection.", "pretrained.patch_embed.proj.")
        n = re.sub(r"backbone\.encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1", r"pretrained.blocks.\1.ls\2.gamma", n)
        n = re.sub(r"backbone\.encoder\.layer\.(\d+)\.attention\.o_proj\.", r"pretrained.blocks.\1.attn.proj.", n)
        n = re.sub(r"backbone\.encoder\.layer\.(\d+)\.", r"pretrained.blocks.\1.", n)
        n = n.replace("backbone.layernorm.", "pretrained.norm.")
        n = re.sub(r"neck\.reassemble_stage\.layers\.(\d)\.projection\.", r"depth_head.projects.\1.", n)
        n = re.sub(r"neck\.reassemble_stage\.layers\.(\d)\.resize\.", r"depth_head.resize_layers.\1.", n)
        n = re.sub(r"neck\.convs\.(\d)\.", lambda m: f"depth_head.scratch.layer{int(m.group(1)) + 1}_rn.", n)
        if m := re.match(r"neck\.fusion_stage\.layers\.(\d)\.(.*)", n):
            rest = m.group(2).replace("projection.", "out_conv.")
            rest = re.sub(r"residual_layer(\d)\.convolution(\d)\.", r"resConfUnit\1.conv\2.", rest)
            n = f"depth_head.scratch.refinenet{fusion[int(m.group(1))]}.{rest}"
        n = n.replace("head.conv1.", "depth_head.scratch.output_conv1.")
        n = n.replace("head.conv2.", "depth_head.scratch.output_conv2.0.")
        n = n.replace("head.conv3.", "depth_head.scratch.output_conv2.2.")
        out[n] = v
    for (layer, kind), parts in qkv.items():
        out[f"pretrained.blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def to_official_dares(state: dict) -> dict:
    """Our peft-wrapped DARES state -> the official DARES `depth_model.pth` state_dict keys."""
    return to_transformers4(replace_in_keys(state, OFFICIAL_DARES_LORA_NAMES))


def plain_dav2(hf_config: dict, seed: int = 0) -> DepthAnythingForDepthEstimation:
    torch.manual_seed(seed)
    return DepthAnythingForDepthEstimation(DepthAnythingConfig(**hf_config)).eval()
