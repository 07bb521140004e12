"""Training is the official DARES method, term by term: our trainer against the numbers the official code gave.

test/fixtures/official_parity holds only inputs and outputs of one run of the official code (mobarakol/DARES
51dbeb4) on CPU, made outside this project as its PROVENANCE.md says: four frames of a synthetic scene, the
split that picks two items of them, the per-term losses of two iterations (position step and depth step),
gradient norms of the first, and torchvision's ColorJitter on a crop. The weights are not stored: every tensor
of every network comes from its official name by the rule in `recipe`, the same rule the run used.
"""

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import to_official_dares
from helpers import TINY
from torch.utils.data import default_collate

from dares_core.cli import main
from dares_core.data.scared import ColorJitter, ScaredSequenceDataset
from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig
from dares_core.model.weights import save_depth_net
from dares_core.train import TrainConfig, Trainer

FIXTURE = Path(__file__).parent / "fixtures" / "official_parity"
OFFICIAL_NAMES = {"depth": "depth_model"}  # our model key -> the official trainer's, where they differ
# Our model key and parameter name -> the official name in reference.json. The encoders' first convolutions are
# recorded there too but not compared: behind BatchNorm over a 2-image batch their gradients are a small
# difference of large terms that moves 1e-3 with summation order alone (AVX2 against AVX-512).
GRADIENTS = {
    ("position", "decoder.0.conv.conv.weight"): "position.decoder.0.conv.conv.weight",
    ("position", "decoder.13.weight"): "position.decoder.13.weight",
    ("depth", "backbone.encoder.layer.0.attention.q_proj.lora_A.default.weight"):
        "depth_model.backbone.encoder.layer.0.attention.attention.query.linear_a.weight",
    ("depth", "backbone.encoder.layer.3.attention.v_proj.lora_B.default.weight"):
        "depth_model.backbone.encoder.layer.3.attention.attention.value.linear_b.weight",
    ("depth", "neck.fusion_stage.layers.0.projection.weight"):
        "depth_model.neck.fusion_stage.layers.0.projection.weight",
    ("depth", "head.conv3.weight"): "depth_model.head.conv3.weight",
    ("pose", "net.3.weight"): "pose.net.3.weight",
    ("transform", "decoder.13.conv.weight"): "transform.decoder.13.conv.weight",
}


def recipe(name: str, like: torch.Tensor) -> torch.Tensor:
    """The fixture's weights: a tensor drawn from its official name alone (kept identical to the run's)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros_like(like)
    n = rng.standard_normal(tuple(like.shape))
    if leaf == "running_var":
        v = 1 + 0.1 * np.abs(n)
    elif like.ndim >= 2:
        v = n / math.sqrt(int(np.prod(like.shape[1:])))
    elif leaf == "weight" or leaf.startswith("lambda"):
        v = 1 + 0.1 * n
    else:
        v = 0.1 * n
    return torch.from_numpy(v).to(like.dtype)


def fill(model: torch.nn.Module, official_model: str) -> None:
    """Load the recipe's weights into one of our networks, each tensor drawn from its official name."""
    state = model.state_dict()
    official = to_official_dares(state) if official_model == "depth_model" else state
    assert len(official) == len(state)
    model.load_state_dict({k: recipe(f"{official_model}.{name}", v) for (k, v), name in zip(state.items(), official)})


@pytest.fixture(scope="module")
def reference():
    return json.loads((FIXTURE / "reference.json").read_text())


@pytest.fixture(scope="module")
def ours(reference, tmp_path_factory):
    """Our trainer, official defaults, the fixture's weights and batch: (batch, two train_step results, gradient
    norms of the first)."""
    torch.manual_seed(0)
    cfg = TrainConfig(data=str(FIXTURE / "data"), out=str(tmp_path_factory.mktemp("run")), height=256, width=320,
                      batch_size=2, hf_config=TINY, encoder="tiny", lora_ranks=[14, 14, 12, 12], num_workers=0,
                      device="cpu")
    trainer = Trainer(cfg)
    assert sorted(to_official_dares(trainer.models["depth"].state_dict())) == reference["depth_model_keys"]
    for key, model in trainer.models.items():
        fill(model, OFFICIAL_NAMES.get(key, key))
    items = ScaredSequenceDataset(FIXTURE / "data", trainer.train_set.entries, 256, 320, train=False)  # no augmentation
    batch = default_collate([items[i] for i in range(len(items))])
    first = trainer.train_step({k: v.clone() for k, v in batch.items()})
    params = {(key, name): p for key, model in trainer.models.items() for name, p in model.named_parameters()}
    grads = {official: float(params[ours].grad.double().norm()) for ours, official in GRADIENTS.items()}
    second = trainer.train_step({k: v.clone() for k, v in batch.items()})
    return batch, [first["terms"], second["terms"]], grads


def test_the_batch_is_the_official_loaders(ours, reference):
    """PIL LANCZOS from 480x384 to 320x256 and on down the scales: the same pixels as the official loader."""
    batch = ours[0]
    for name, total in reference["inputs"].items():
        _, frame, scale = name.split()
        assert float(batch[("color", int(frame), int(scale))].double().sum()) == pytest.approx(total, rel=1e-7)


@pytest.mark.parametrize("step", ["step0", "step1"])
def test_every_loss_term_of_the_first_iteration_agrees_to_1e_4(ours, reference, step):
    terms = ours[1][0]
    expected = reference["iterations"][0][step]
    prefix = "position/" if step == "step0" else ""
    assert len(expected) == 13 if step == "step0" else 21
    for name, value in expected.items():
        assert terms[prefix + name] == pytest.approx(value, rel=1e-4), f"{step} {name}"


def test_gradients_of_the_first_iteration_agree_to_1e_3(ours, reference):
    first = reference["iterations"][0]
    recorded = {**first["grad_norms_step0"], **first["grad_norms_step1"]}
    for name in GRADIENTS.values():
        assert ours[2][name] == pytest.approx(recorded[name], rel=1e-3), name


def test_the_second_iteration_agrees_to_1e_3(ours, reference):
    """After one Adam step of each optimiser, every term again."""
    terms = ours[1][1]
    for step, prefix in (("step0", "position/"), ("step1", "")):
        for name, value in reference["iterations"][1][step].items():
            assert terms[prefix + name] == pytest.approx(value, rel=1e-3), f"{step} {name}"


def test_dares_eval_gives_the_official_evaluate_depth_numbers(reference, tmp_path):
    """`dares eval --weights --data` against the official evaluate_depth.py on the same frames and weights."""
    net = DaresDepthNet(DepthNetConfig.dares("tiny", [14, 14, 12, 12], hf_config=TINY))
    fill(net, "depth_model")
    save_depth_net(net, tmp_path / "model.safetensors")
    assert main(["eval", "--weights", str(tmp_path / "model.safetensors"), "--data", str(FIXTURE / "data"),
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    for name, value in reference["evaluate_depth"].items():
        assert metrics[name] == pytest.approx(value, rel=1e-4), name


def test_colour_jitter_is_torchvisions():
    """Our PIL ColorJitter against torchvision 0.28's on the same crop and draws: the same uint8 pixels."""
    ref = np.load(FIXTURE / "jitter_reference.npz")
    for order, factors, expected in zip(ref["orders"], ref["factors"], ref["outputs"]):
        got = ColorJitter(tuple(int(i) for i in order), tuple(float(f) for f in factors))(ref["image"])
        assert np.array_equal(got, expected), (order, factors)
