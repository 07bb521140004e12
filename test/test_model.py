"""The DARES network: parity with transformers + hand-folded LoRA, merge, and every checkpoint layout."""

import json
import os
import pickle
import subprocess
import sys
import types

import pytest
import torch
import torch.nn as nn
from checkpoints import plain_dav2, to_official_dares, to_official_dav2, write_hf_folder

from dares_core.errors import DaresError
from dares_core.model.depth_net import (
    PAPER_RANKS_VITS,
    DaresDepthNet,
    DepthNetConfig,
    hf_config_for,
    linear_ranks,
    official_position_embeddings,
)
from dares_core.model.weights import CheckpointError, load_depth_net, load_strict, save_depth_net

IMAGE = torch.rand(2, 3, 98, 126, generator=torch.Generator().manual_seed(1))  # multiples of 14
ODD_IMAGE = torch.rand(1, 3, 100, 130, generator=torch.Generator().manual_seed(2))


def randomise_lora(net: nn.Module, seed: int = 3) -> None:
    """Trained-looking adapters: B is zero at initialisation, which would hide LoRA bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


@pytest.fixture(scope="module")
def dares_vits():
    torch.manual_seed(0)
    net = DaresDepthNet(DepthNetConfig.dares("vits")).eval()
    randomise_lora(net)
    return net


def run(net, image=IMAGE, scales=(0,)):
    with torch.no_grad():
        return net(image, scales)


def test_vector_lora_ranks_and_trainable_count(dares_vits):
    ranks = {}
    for name, p in dares_vits.named_parameters():
        if "lora_A" in name:
            ranks[name] = p.shape[0]
    q = [ranks[f"backbone.encoder.layer.{i}.attention.q_proj.lora_A.default.weight"] for i in range(12)]
    v = [ranks[f"backbone.encoder.layer.{i}.attention.v_proj.lora_A.default.weight"] for i in range(12)]
    assert q == v == PAPER_RANKS_VITS
    assert not any("k_proj.lora" in n for n in ranks)
    trainable = sum(p.numel() for p in dares_vits.trainable_parameters())
    lora = sum(p.numel() for n, p in dares_vits.named_parameters() if "lora_" in n)
    assert lora == 2 * 2 * 384 * sum(PAPER_RANKS_VITS) == 184_320  # q and v, A and B, per block
    assert 2_850_000 < trainable < 2_950_000  # the paper's ~2.9 M for ViT-S
    assert all(not p.requires_grad for n,
               p in dares_vits.named_parameters() if n.startswith("backbone.") and "lora_" not in n)
    assert linear_ranks(24)[0] == 14 and linear_ranks(24)[-1] == 8 and sorted(linear_ranks(24),
                                                                              reverse=True) == linear_ranks(24)
    assert DepthNetConfig.dares("vitb").lora_ranks == linear_ranks(12)


def test_lora_scaling_is_one_like_official(dares_vits):
    layer = dares_vits.backbone.encoder.layer[0].attention.q_proj
    assert layer.scaling["default"] == 1.0


def test_parity_with_transformers_and_lora_folded_by_hand(dares_vits):
    """Our multi-scale net vs the plain transformers model with W + B·A written by hand and a sigmoid head."""
    reference = plain_dav2(hf_config_for("vits"))
    state = {}
    ours = dares_vits.state_dict()
    for k, v in reference.state_dict().items():
        wrapped = k.replace("_proj.weight", "_proj.base_layer.weight").replace("_proj.bias", "_proj.base_layer.bias")
        if wrapped in ours and wrapped != k:
            prefix = k.rsplit(".", 1)[0]
            v = ours[wrapped]
            if k.endswith("weight"):
                v = v + ours[f"{prefix}.lora_B.default.weight"] @ ours[f"{prefix}.lora_A.default.weight"]
        else:
            v = ours[k]
        state[k] = v
    reference.load_state_dict(state)
    reference.head.activation2 = nn.Sigmoid()  # DARES replaces DAv2's ReLU output with a sigmoid
    embeddings = reference.backbone.embeddings  # and position embeddings resized as the official DINOv2
    embeddings.interpolate_pos_encoding = types.MethodType(official_position_embeddings, embeddings)
    with torch.no_grad():
        expected = reference(pixel_values=IMAGE).predicted_depth
    got = run(dares_vits)[0]
    assert got.shape == (2, 1, 98, 126)
    torch.testing.assert_close(got[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_position_embeddings_are_resized_as_the_network_was_trained(dares_vits):
    """New networks resize DINOv2's position embeddings as the official code (the parity test holds that to the
    official numbers); our checkpoints written before the choice was recorded keep transformers 5's "exact"."""
    assert dares_vits.config.position_embeddings == "official"
    legacy = json.loads(dares_vits.config.to_json())
    del legacy["position_embeddings"]
    assert DepthNetConfig.from_json(json.dumps(legacy)).position_embeddings == "exact"
    exact = DaresDepthNet(DepthNetConfig.from_json(json.dumps(legacy)))
    exact.load_state_dict(dares_vits.state_dict())
    square = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the tokens entering the first block: patch embedding + position embedding
        torch.testing.assert_close(exact.backbone.embeddings(square), dares_vits.backbone.embeddings(square))
        change = exact.backbone.embeddings(IMAGE) - dares_vits.backbone.embeddings(IMAGE)
    table = dares_vits.backbone.embeddings.position_embeddings
    assert change.abs().max() > 0.05 * table.abs().max()  # resized to 7x9 patches: each its own way
    with pytest.raises(DaresError, match="position_embeddings"):
        DepthNetConfig(position_embeddings="bicubic")


def test_multiscale_outputs_and_sizes_not_multiple_of_14(dares_vits):
    out = run(dares_vits, ODD_IMAGE, scales=(0, 1, 2, 3))
    assert [tuple(out[s].shape[-2:]) for s in range(4)] == [(100, 130), (50, 65), (25, 32), (12, 16)]
    assert all(((o > 0) & (o < 1)).all() for o in out.values())


def test_merge_is_exact_and_drops_peft(dares_vits, tmp_path):
    merged = load_depth_net(_save(dares_vits, tmp_path / "a.safetensors"))
    before = run(merged)[0]
    merged.merge_lora()
    assert not any("lora" in k or "base_layer" in k for k in merged.state_dict())
    assert (run(merged)[0] - before).abs().max() < 1e-5
    path = tmp_path / "merged.safetensors"
    save_depth_net(merged, path)
    code = (
        "import sys, torch; from dares_core.model.weights import load_depth_net;"
        f"net = load_depth_net(r'{path}'); print('peft' in sys.modules, net.config.merged)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def _save(net, path, **kw):
    save_depth_net(net, path, **kw)
    return path


def test_our_safetensors_full_and_adapters_round_trip(dares_vits, tmp_path):
    expected = run(dares_vits)[0]
    full = load_depth_net(_save(dares_vits, tmp_path / "full.safetensors"))
    assert torch.equal(run(full)[0], expected)

    base = plain_dav2(hf_config_for("vits"))
    base_state = {k: v for k, v in dares_vits.state_dict().items() if "lora_" not in k}
    base.load_state_dict({k.replace(".base_layer.", "."): v for k, v in base_state.items()})
    base_dir = write_hf_folder(base, tmp_path / "Depth-Anything-V2-Small-hf")
    adapters = _save(dares_vits, tmp_path / "adapters.safetensors", adapters_only=True)
    assert adapters.stat().st_size < 0.2 * (tmp_path / "full.safetensors").stat().st_size
    with pytest.raises(CheckpointError, match="--base-weights"):
        load_depth_net(adapters)
    again = load_depth_net(adapters, base_weights=base_dir)
    assert torch.equal(run(again)[0], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_official_dares_checkpoint(dares_vits, tmp_path, dtype):
    state = {k: v.to(dtype) for k, v in to_official_dares(dares_vits.state_dict()).items()}
    assert "backbone.encoder.layer.0.attention.attention.query.linear_a.weight" in state
    path = tmp_path / "depth_model.pth"
    torch.save(state, path)
    net = load_depth_net(path)
    assert net.config.mode == "dares" and net.config.lora_ranks == PAPER_RANKS_VITS
    for k, v in dares_vits.state_dict().items():
        assert torch.equal(net.state_dict()[k], v.to(dtype).float()), k
    if dtype == torch.float32:
        assert torch.equal(run(net)[0], run(dares_vits)[0])


def test_hf_folder_and_official_dav2_pth_load_the_same_weights(tmp_path):
    reference = plain_dav2(hf_config_for("vits"), seed=5)
    with torch.no_grad():
        expected = reference(pixel_values=(IMAGE - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                             / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)).predicted_depth
    folder_v4 = write_hf_folder(reference, tmp_path / "hf_v4", legacy_names=True)
    folder_v5 = write_hf_folder(reference, tmp_path / "hf_v5", legacy_names=False)
    pth = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(to_official_dav2(reference.state_dict()), pth)
    for source in (folder_v4, folder_v5, pth):
        net = load_depth_net(source)
        assert net.config.mode == "zero_shot" and net.config.encoder == "vits"
        torch.testing.assert_close(run(net)[0][:, 0], expected, atol=1e-5, rtol=1e-5)
    start = load_depth_net(pth, mode="dares")  # the start of DARES training: fresh adapters, B = 0
    assert start.config.lora_ranks == PAPER_RANKS_VITS
    assert torch.equal(start.backbone.encoder.layer[3].attention.q_proj.base_layer.weight,
                       reference.backbone.encoder.layer[3].attention.q_proj.weight)


def test_bad_checkpoints_fail_with_one_clear_line(dares_vits, tmp_path):
    good = tmp_path / "depth_model.pth"
    torch.save(to_official_dares(dares_vits.state_dict()), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    st = _save(dares_vits, tmp_path / "w.safetensors")
    st_trunc = tmp_path / "trunc.safetensors"
    st_trunc.write_bytes(st.read_bytes()[:1000])
    missing_key = tmp_path / "missing.pth"
    state = to_official_dares(dares_vits.state_dict())
    del state["neck.convs.0.weight"]
    torch.save(state, missing_key)
    cases = {
        tmp_path / "nope.pth": "not found",
        empty: "empty",
        truncated: "not a readable PyTorch checkpoint",
        st_trunc: "not a readable safetensors",
        missing_key: "1 missing key(s) e.g. neck.convs.0.weight",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError) as e:
            load_depth_net(path)
        text = str(e.value)
        assert message in text and str(path) in text and "\n" not in text


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('DARES_EXPLOIT_MARKER', '/tmp/dares_exploit')}",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("DARES_EXPLOIT_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"weight": torch.zeros(1), "payload": _Exploit()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused.*weights_only"):
        load_depth_net(path)
    assert not marker.exists()


def test_checkpoint_of_another_backbone_size_is_named(dares_vits):
    state = dict(dares_vits.state_dict())
    state["backbone.embeddings.cls_token"] = torch.zeros(1, 1, 768)
    with pytest.raises(CheckpointError, match="is a vitb model but vits was asked for"):
        load_strict(dares_vits, state, "other.pth")


def test_config_errors_are_clear():
    with pytest.raises(DaresError, match="one rank per block"):
        DepthNetConfig.dares("vits", ranks=[8] * 5)
    with pytest.raises(DaresError, match="unknown encoder"):
        DepthNetConfig.dares("vitx")


def test_the_head_we_run_at_every_scale_is_transformers_own():
    """DaresDepthNet._disparity re-runs transformers' DepthAnythingDepthEstimationHead layer by layer at any output
    size: if transformers renames or adds a layer this fails and names the fix; zero-shot it equals transformers'
    own forward."""
    from helpers import TINY

    net = DaresDepthNet(DepthNetConfig(encoder="tiny", mode="zero_shot", hf_config=TINY)).eval()
    assert [name for name, _ in net.head.named_children()] == ["conv1", "conv2", "activation1", "conv3",
                                                               "activation2"], \
        "transformers changed DepthAnythingDepthEstimationHead: update DaresDepthNet._disparity to match"
    reference = plain_dav2(TINY)
    reference.load_state_dict(net.state_dict(), strict=False)
    embeddings = reference.backbone.embeddings
    embeddings.interpolate_pos_encoding = types.MethodType(official_position_embeddings, embeddings)
    with torch.no_grad():  # transformers takes ImageNet-normalised pixels, we take [0,1]
        expected = reference(pixel_values=(IMAGE - net.mean) / net.std).predicted_depth
        got = net(IMAGE)[0][:, 0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
