"""Every checkpoint layout in, safetensors out. Verified (keys, shapes) before use; no pickle ever runs code.

Layouts read:
  1. a Hugging Face Depth-Anything-V2 folder (config.json + model.safetensors or pytorch_model.bin)
  2. the official Depth Anything V2 release (depth_anything_v2_vit{s,b,l}.pth: `pretrained.*`, `depth_head.*`)
  3. the official DARES checkpoint (depth_model.pth: transformers-4 names, LoRA as `linear_a`/`linear_b`)
  4. ours: .safetensors with the DepthNetConfig JSON in its metadata, "full" or "adapters" (LoRA + neck/head)
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import DaresError
from ..files import atomic_file
from .depth_net import ENCODERS, DaresDepthNet, DepthNetConfig

FORMAT_TAG = "dares"
DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo_model.safetensors"  # see docs/demo_model.md
DEMO_POSE = DEMO_MODEL.with_name("demo_pose.safetensors")  # its pose network, trained beside it (same document)
OPTIONAL_KEYS = ("backbone.embeddings.mask_token",)  # used only for masked pre-training, never by depth

# transformers 4 names (HF hub folders, official DARES) -> the installed transformers 5 names.
LEGACY_RENAMES = [
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
]
# official DARES LoRA wrapper (_LoRA_qkv: w, linear_a, linear_b) -> peft LoraLayer
DARES_LORA_RENAMES = [
    (r"_proj\.w\.", "_proj.base_layer."),
    (r"_proj\.linear_a\.", "_proj.lora_A.default."),
    (r"_proj\.linear_b\.", "_proj.lora_B.default."),
]
# official Depth Anything V2 (DINOv2 hub + DPT head) -> transformers DepthAnythingForDepthEstimation
DAV2_RENAMES = [
    (r"^pretrained\.cls_token$", "backbone.embeddings.cls_token"),
    (r"^pretrained\.mask_token$", "backbone.embeddings.mask_token"),
    (r"^pretrained\.pos_embed$", "backbone.embeddings.position_embeddings"),
    (r"^pretrained\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
    (r"^pretrained\.blocks\.(\d+)\.ls(\d)\.gamma$", r"backbone.encoder.layer.\1.layer_scale\2.lambda1"),
    (r"^pretrained\.blocks\.(\d+)\.attn\.proj\.", r"backbone.encoder.layer.\1.attention.o_proj."),
    (r"^pretrained\.blocks\.(\d+)\.", r"backbone.encoder.layer.\1."),
    (r"^pretrained\.norm\.", "backbone.layernorm."),
    (r"^depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
    (r"^depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
    (r"^depth_head\.scratch\.layer(\d)_rn\.", lambda m: f"neck.convs.{int(m.group(1)) - 1}."),
    (r"^depth_head\.scratch\.refinenet(\d)\.", lambda m: f"neck.fusion_stage.layers.{4 - int(m.group(1))}."),
    (r"\.out_conv\.", ".projection."),
    (r"\.resConfUnit(\d)\.conv(\d)\.", r".residual_layer\1.convolution\2."),
    (r"^depth_head\.scratch\.output_conv1\.", "head.conv1."),
    (r"^depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
    (r"^depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
]


class CheckpointError(DaresError):
    """A checkpoint that is missing, corrupt, unsafe or of another architecture."""


def _rename(state: dict, rules) -> dict:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _split_qkv(state: dict) -> dict:
    """Official DINOv2 fused `attn.qkv` -> separate q/k/v projections (in that order)."""
    out = {}
    for key, value in state.items():
        m = re.match(r"^(backbone\.encoder\.layer\.\d+)\.attn\.qkv\.(weight|bias)$", key)
        if m:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{m.group(1)}.attention.{name}.{m.group(2)}"] = part
        else:
            out[key] = value
    return out


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The metadata of a .safetensors file, without reading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a .safetensors or PyTorch file, fp32; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; check the --weights path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty; download or export it again")
    if path.suffix == ".safetensors":
        try:
            metadata = safetensors_metadata(path)
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e}); "
                                  "it may be truncated, export it again") from None
    else:
        metadata = {}
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "unsupported global" not in str(e).lower():  # no code-running object: not a pickle of ours at all
                raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0]}); it "
                                      "may be truncated or not a checkpoint at all") from None
            raise CheckpointError(
                f"{path}: refused, the file holds Python objects that could run code (loaded with weights_only=True);"
                " re-save it as a plain state_dict or safetensors"
            ) from None
        except Exception as e:  # torch.load of arbitrary bytes raises many types (KeyError, EOFError, ...)
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail}); it may be truncated or "
                                  f"not a checkpoint at all") from None
        for wrapper in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: not a state_dict of tensors; pass a model checkpoint")
    state = {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in state.items()}
    broken = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:
        raise CheckpointError(f"{path}: holds NaN or inf weights (e.g. {broken}): training diverged before this was "
                              "saved; use an earlier checkpoint")
    return state, metadata


def _encoder_of(width: int) -> str:
    return next((name for name, e in ENCODERS.items() if e["hidden_size"] == width), f"width-{width}")


def load_strict(net: DaresDepthNet, state: dict, source: Path) -> None:
    """Load `state` into `net` only if every key and shape matches; otherwise one line saying what differs."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and k not in OPTIONAL_KEYS]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if shapes and "backbone.embeddings.cls_token" in shapes:
        key = "backbone.embeddings.cls_token"
        got, want = state[key].shape[-1], expected[key].shape[-1]
        raise CheckpointError(
            f"{source}: checkpoint is a {_encoder_of(got)} model but {_encoder_of(want)} was asked for; "
            "pass weights of the encoder the model was built for"
        )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[0]}")
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, model has {tuple(expected[k].shape)}")
        raise CheckpointError(f"{source}: does not match the model ({'; '.join(parts)}); pass a checkpoint of this "
                              f"architecture")
    net.load_state_dict(state, strict=False)


def _config_from_backbone_state(state: dict, mode: str, lora: dict[str, list[int]] | None = None) -> DepthNetConfig:
    """Infer the DAv2 encoder size from tensor shapes (hidden width and block count)."""
    width = state["backbone.embeddings.cls_token"].shape[-1]
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", k)))
    encoder = _encoder_of(width)
    if encoder not in ENCODERS or ENCODERS[encoder]["layers"] != layers:
        raise CheckpointError(f"checkpoint has a {width}-wide, {layers}-block ViT: not a Depth Anything V2 "
                              f"Small/Base/Large")
    if lora:
        return DepthNetConfig(encoder=encoder, mode=mode, lora_ranks=lora["ranks"], lora_targets=lora["targets"])
    return DepthNetConfig(encoder=encoder, mode=mode)


def _official_dares_lora(state: dict) -> dict:
    """Ranks and targets of an official DARES checkpoint, read from its linear_a shapes."""
    ranks, targets = {}, set()
    for k, v in state.items():
        m = re.match(r"backbone\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.linear_a\.weight$", k)
        if m:
            ranks[int(m.group(1))] = v.shape[0]
            targets.add(m.group(2)[0])
    return {"ranks": [ranks[i] for i in sorted(ranks)], "targets": [t for t in ("q", "k", "v") if t in targets]}


def _read_hf_folder(path: Path, mode: str) -> tuple[DepthNetConfig, dict]:
    """A Hugging Face Depth-Anything-V2 folder as (config, transformers-5 state)."""
    config_file = path / "config.json"
    weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
    if not config_file.is_file() or weights is None:
        raise CheckpointError(f"{path}: a Hugging Face folder needs config.json and model.safetensors (or "
                              f"pytorch_model.bin)")
    try:
        hf = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e}); download the folder again") from None
    if hf.get("model_type") != "depth_anything" or "backbone_config" not in hf:
        raise CheckpointError(f"{config_file}: model_type is {hf.get('model_type')!r}, expected a 'depth_anything' "
                              f"config")
    state, _ = read_tensors(weights)
    keep = ("backbone_config", "reassemble_hidden_size", "patch_size", "fusion_hidden_size", "neck_hidden_sizes",
            "head_hidden_size", "depth_estimation_type", "reassemble_factors", "head_in_index", "max_depth")
    hf_config = {k: hf[k] for k in keep if k in hf}
    width = hf_config["backbone_config"]["hidden_size"]
    return DepthNetConfig(encoder=_encoder_of(width), mode=mode, hf_config=hf_config), _rename(state, LEGACY_RENAMES)


def _from_dav2_release(state: dict, path: Path, mode: str) -> tuple[DepthNetConfig, dict]:
    """Official Depth Anything V2 .pth tensors as (config, transformers-5 state)."""
    if not any(k.startswith("pretrained.") for k in state):
        raise CheckpointError(f"{path}: no `pretrained.*` keys, so not an official Depth Anything V2 .pth")
    state = _split_qkv(_rename(state, DAV2_RENAMES))
    return _config_from_backbone_state(state, mode), state


def _read_base(path: Path, mode: str) -> tuple[DepthNetConfig, dict]:
    """Plain Depth Anything V2 weights (HF folder or official .pth) as (config, transformers-5 state)."""
    path = Path(path)
    if path.is_dir():
        return _read_hf_folder(path, mode)
    return _from_dav2_release(read_tensors(path)[0], path, mode)


def _under_lora_wrappers(state: dict, net: DaresDepthNet) -> dict:
    """Plain keys (`...q_proj.weight`) renamed to peft's `...q_proj.base_layer.weight` where LoRA wraps them."""
    names = set(net.state_dict())
    out = {}
    for k, v in state.items():
        wrapped = re.sub(r"(_proj)\.(weight|bias)$", r"\1.base_layer.\2", k)
        out[wrapped if wrapped in names else k] = v
    return out


def load_depth_net(path: Path, base_weights: Path | None = None, mode: str | None = None) -> DaresDepthNet:
    """Build and load a depth network from any supported layout; verified before use, eval mode, fp32, CPU.

    Plain DAv2 weights load in zero_shot mode unless mode="dares" (then with fresh Vector-LoRA, the start of
    DARES training). Adapter-only safetensors need `base_weights` (the DAv2 they were trained on).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: not found; check the --weights path")
    if path.is_dir():
        return _load_plain(path, *_read_hf_folder(path, mode or "zero_shot"))
    state, meta = read_tensors(path)
    if meta.get("format") == FORMAT_TAG:
        return _load_ours(path, state, meta, base_weights).eval()
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path}: safetensors without dares metadata; pass a file written by `dares` or a HF "
                              f"folder")
    if any(k.startswith("pretrained.") for k in state):
        return _load_plain(path, *_from_dav2_release(state, path, mode or "zero_shot"))
    if not any(k.startswith("backbone.encoder.layer.") for k in state):
        raise CheckpointError(f"{path}: unknown checkpoint layout (keys like {next(iter(state))}); see docs/model.md's "
                              f"table of formats")
    lora = _official_dares_lora(state)  # the official DARES depth_model.pth
    state = _rename(_rename(state, LEGACY_RENAMES), DARES_LORA_RENAMES)
    net = DaresDepthNet(_config_from_backbone_state(state, "dares", lora if lora["ranks"] else None))
    load_strict(net, state, path)
    return net.eval()


def _load_plain(path: Path, config: DepthNetConfig, state: dict) -> DaresDepthNet:
    """Plain DAv2 weights as given (zero_shot), or under fresh Vector-LoRA (B = 0) to start DARES training."""
    if config.mode == "dares":
        net = DaresDepthNet(DepthNetConfig.dares(config.encoder, hf_config=config.hf_config))
        fresh = {k: v for k, v in net.state_dict().items() if "lora_" in k}
        state = {**_under_lora_wrappers(state, net), **fresh}
    else:
        net = DaresDepthNet(config)
    load_strict(net, state, path)
    return net.eval()


def _load_ours(path: Path, state: dict, meta: dict, base_weights: Path | None) -> DaresDepthNet:
    try:
        config = DepthNetConfig.from_json(meta["config"])
    except (KeyError, json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable config metadata ({e}); export the checkpoint again") from None
    net = DaresDepthNet(config)
    if meta.get("contents") == "adapters":
        if base_weights is None:
            raise CheckpointError(f"{path}: holds adapters only; pass the Depth Anything V2 weights it was trained on "
                                  f"with --base-weights")
        base_config, base_state = _read_base(base_weights, config.mode)
        width = lambda c: c.hf_config["backbone_config"]["hidden_size"]  # noqa: E731
        if width(base_config) != width(config):
            raise CheckpointError(f"{base_weights}: is {base_config.encoder} but the adapters in {path} are for "
                                  f"{config.encoder}")
        backbone = {k: v for k, v in _under_lora_wrappers(base_state, net).items() if k.startswith("backbone.")}
        state = {**backbone, **state}
    load_strict(net, state, path)
    return net


def save_depth_net(net: DaresDepthNet, path: Path, adapters_only: bool = False) -> None:
    """Write `net` as safetensors with its config in the metadata, atomically.

    adapters_only: keep LoRA, neck and head (what DARES trains), not the frozen backbone.
    """
    state = net.state_dict()
    if adapters_only:
        if not net.config.has_adapters:
            raise DaresError("adapters_only needs a network with unmerged LoRA adapters")
        state = {k: v for k, v in state.items() if not k.startswith("backbone.") or "lora_" in k}
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    metadata = {"format": FORMAT_TAG, "config": net.config.to_json(),
                "contents": "adapters" if adapters_only else "full"}
    with atomic_file(Path(path)) as tmp:
        save_file(state, str(tmp), metadata=metadata)


