"""Training: exact resume, data-parallel equivalence, the method's pieces, and clear configuration errors."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY
from safetensors import safe_open
from torch.utils.data import default_collate

from dares_core.cli import main
from dares_core.data.scared import ColorJitter, ScaredSequenceDataset, read_split
from dares_core.data.synthetic import SynthConfig, generate
from dares_core.errors import DaresError
from dares_core.train import TrainConfig, run_training


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate(
        SynthConfig(width=128, height=96, frames=8, sequences=3, seed=5), tmp_path_factory.mktemp("t") / "s"
    )


def config(scenes, out, **kw):
    values = dict(
        data=str(scenes),
        out=str(out),
        hf_config=TINY,
        encoder="tiny",
        train_backbone=True,
        height=64,
        width=96,
        batch_size=2,
        num_workers=0,
        device="cpu",
        num_epochs=2,
        max_steps_per_epoch=3,
        seed=3,
        af_width=16,  # narrow pose and appearance ResNets: checkpoints of MB, not the 400 MB of ResNet-18s
    )
    values.update(kw)
    return TrainConfig(**values)


def losses(run):
    return [json.loads(line) for line in (Path(run) / "losses.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("train_backbone", [False, True])
def test_resumed_run_matches_uninterrupted_step_for_step(scenes, tmp_path, train_backbone):
    """With the official frozen backbone (checkpoints keep only what trains; the backbone comes back from the
    seed or --weights) and with everything trained."""
    runs = {name: config(scenes, tmp_path / name, train_backbone=train_backbone) for name in "ab"}
    run_training(runs["a"], progress=False)
    run_training(dataclasses.replace(runs["b"], num_epochs=1), progress=False)
    run_training(runs["b"], resume=tmp_path / "b", progress=False)
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)
        assert x["loss_position"] == pytest.approx(y["loss_position"], abs=1e-6)
    checkpoints = tmp_path / "b" / "checkpoints"
    depth = torch.load(checkpoints / "last.pt", weights_only=True)["models"]["depth"]
    frozen = [k for k in depth if k.startswith("backbone.") and "lora_" not in k]
    assert bool(frozen) == train_backbone and any("lora_" in k for k in depth)
    metrics = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and "abs_rel" in metrics[0]
    last_is_best = metrics[1]["abs_rel"] < metrics[0]["abs_rel"]
    assert os.path.samefile(checkpoints / "best.pt", checkpoints / "last.pt") == last_is_best  # a link, not a copy
    assert (tmp_path / "b" / "depth_model.safetensors").is_file()


def test_training_changes_only_what_dares_trains(scenes, tmp_path):
    from dares_core.train import Trainer

    cfg = config(scenes, tmp_path / "r", train_backbone=False, hf_config=TINY, num_epochs=1, max_steps_per_epoch=1)
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.models["depth"].state_dict().items()}
    trainer.fit(progress=False)
    after = trainer.models["depth"].state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k or not k.startswith("backbone.") for k in changed)
    assert any("lora_" in k for k in changed) and any(k.startswith("neck.") for k in changed)


def test_two_process_data_parallel_matches_one_process(scenes, tmp_path):
    """torchrun with 2 CPU processes (gloo) and the same global batch computes what one process computes: the
    losses of two steps, and the all-reduced gradients of the first step (BatchNorm statistics, masked means
    and the batch MS-SSIM all over the global batch). Gradients are compared before the optimizer, relative
    to each network's gradient norm: after Adam a near-zero gradient whose sign depends on the summation
    order moves a weight by the full learning rate either way, so weights are no fair comparison. Both runs
    are in float64 (train_step_gradients.py says why), so the bound is tight on any CPU."""
    cfg = config(scenes, tmp_path / "run", batch_size=2)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.__dict__))
    worker = str(Path(__file__).with_name("train_step_gradients.py"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = {
        "single": [sys.executable, worker],
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker],
    }
    results = {}
    for name, cmd in runs.items():
        done = subprocess.run(
            cmd + [str(cfg_file), str(tmp_path / f"{name}.pt")], capture_output=True, text=True, env=env, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    single, ddp = results["single"], results["ddp"]
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(single["losses"]), rtol=1e-9, atol=0)
    assert single["gradients"].keys() == ddp["gradients"].keys()
    networks = {key.split("/")[0] for key in single["gradients"]}
    assert networks == {
        "depth",
        "pose_encoder",
        "pose",
        "position_encoder",
        "position",
        "transform_encoder",
        "transform",
    }
    for network in networks:
        keys = [k for k in single["gradients"] if k.startswith(network + "/")]
        a = torch.cat([single["gradients"][k].flatten() for k in keys])
        b = torch.cat([ddp["gradients"][k].flatten() for k in keys])
        assert a.norm() > 0, network
        assert (a - b).norm() / a.norm() < 1e-9, (network, float((a - b).norm() / a.norm()))  # measured 1e-13


def test_configuration_errors_are_one_line(scenes, tmp_path, capsys):
    with pytest.raises(DaresError, match="multiples of 32"):
        TrainConfig.from_sources(None, {"data": str(scenes), "height": 100})
    with pytest.raises(DaresError, match="unknown training option"):
        TrainConfig.from_sources(None, {"data": str(scenes), "learning_rat": 1})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert main(["train", "--data", str(scenes), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert "holds notes.txt, which this command did not write" in capsys.readouterr().err  # no run of ours
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    (tmp_path / "run" / "notes.txt").unlink()
    (tmp_path / "run" / "config.yaml").write_text("data: x\n")  # a run that stopped before its first save
    assert main(["train", "--data", str(scenes), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert "saved no checkpoint" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoints").mkdir()
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"")  # an earlier run: --resume or --force
    assert main(["train", "--data", str(scenes), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    bad = tmp_path / "bad"
    (bad / "dataset1" / "keyframe1").mkdir(parents=True)
    (bad / "splits" / "x").mkdir(parents=True)
    (bad / "splits" / "x" / "train_files.txt").write_text("dataset1/keyframe1 2 l\n")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r2"), "--device", "cpu"]) == 2
    assert "not laid out as" in capsys.readouterr().err


def test_af_sfmlearner_weights_load_unchanged(scenes, tmp_path):
    """The six released files (torchvision key layout, plain state_dicts) initialise the pose and appearance nets."""
    from dares_core.model.appearance import PositionDecoder, TransformDecoder
    from dares_core.model.pose_net import PoseDecoder, ResnetEncoder
    from dares_core.train import Trainer

    torch.manual_seed(42)
    released = {
        "pose_encoder": ResnetEncoder(2),
        "pose": PoseDecoder(),
        "position_encoder": ResnetEncoder(2),
        "position": PositionDecoder(),
        "transform_encoder": ResnetEncoder(2),
        "transform": TransformDecoder(),
    }
    folder = tmp_path / "af_sfmlearner_weights"
    folder.mkdir()
    for name, model in released.items():
        torch.save(model.state_dict(), folder / f"{name}.pth")
    assert "encoder.layer4.1.bn2.running_var" in torch.load(folder / "pose_encoder.pth")
    trainer = Trainer(config(scenes, tmp_path / "r", af_weights=str(folder), af_width=64))
    for name, model in released.items():
        for key, value in model.state_dict().items():
            assert torch.equal(trainer.models[name].state_dict()[key], value), (name, key)
    (folder / "pose.pth").write_bytes(b"")
    with pytest.raises(DaresError, match="pose.pth: file is empty"):
        Trainer(config(scenes, tmp_path / "r2", af_weights=str(folder), af_width=64))


def test_sigkill_at_any_moment_never_loses_the_last_good_checkpoint(scenes, tmp_path):
    """SIGKILL training at named moments (mid-epoch, while a checkpoint's temporary file is written but not
    renamed, right after a rename), resuming each time: the checkpoint on disk is always whole and the finished
    run equals an uninterrupted one step for step. The trainer kills itself at each point (DARES_CRASH_AT), so
    every moment is reached on any machine, fast or slow."""
    from dares_core.train import CRASH_AT_VARIABLE

    cfg = config(scenes, tmp_path / "ref", num_epochs=6, max_steps_per_epoch=1)
    run_training(cfg, progress=False)
    run = tmp_path / "crashy"
    cfg_file = tmp_path / "crashy.yaml"
    cfg_file.write_text(yaml.safe_dump({**cfg.__dict__, "out": str(run)}))
    base = [sys.executable, "-m", "dares_core.cli", "train", "--config", str(cfg_file)]
    last = run / "checkpoints" / "last.pt"
    # (crash point, the step the whole checkpoint on disk holds afterwards; None: none written yet)
    for point, step_on_disk in (
        ("checkpoint-written:1", None),
        ("step:2", 1),
        ("checkpoint-written:1", 1),
        ("checkpoint-renamed:1", 2),
        ("checkpoint-written:2", 3),
    ):
        cmd = base + (["--resume", str(run)] if last.is_file() else [])
        killed = subprocess.run(
            cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, **{CRASH_AT_VARIABLE: point})
        )
        assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
        if step_on_disk is None:
            assert not last.exists()
            shutil.rmtree(run)  # killed before its first checkpoint: nothing to resume, start again
        else:
            assert torch.load(last, weights_only=True)["global_step"] == step_on_disk, point
    subprocess.run(base + ["--resume", str(run)], check=True, capture_output=True, timeout=600)
    a, b = losses(tmp_path / "ref"), losses(run)
    assert [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)
    assert not list((run / "checkpoints").glob(".*partial*"))


def test_a_run_resumes_in_place_from_any_folder(scenes, tmp_path, monkeypatch):
    """Paths in a run's config.yaml are absolute, and --resume RUN continues RUN itself, from any working folder,
    without --data."""
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(first)
    values = {**config(scenes, "run", num_epochs=1).__dict__, "data": os.path.relpath(scenes, first)}
    (first / "run.yaml").write_text(yaml.safe_dump(values))
    assert main(["train", "--config", "run.yaml"]) == 0
    stored = yaml.safe_load((first / "run" / "config.yaml").read_text())
    assert stored["out"] == str(first / "run") and stored["data"] == str(scenes.resolve())
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--resume", str(first / "run"), "--epochs", "2"]) == 0
    assert list(elsewhere.iterdir()) == []
    assert [r["step"] for r in losses(first / "run")] == list(range(1, 7))


@pytest.mark.parametrize("per_item, draws", [(False, 12), (True, 1)])
def test_colour_jitter_is_drawn_per_image_as_official_or_per_item_as_an_option(scenes, monkeypatch, per_item, draws):
    """The official loader calls ColorJitter once per frame and scale (3 frames x 4 scales), each call a new draw;
    jitter_per_item=true draws once for the whole item."""
    calls = []
    draw = ColorJitter.draw.__func__
    monkeypatch.setattr(ColorJitter, "draw", classmethod(lambda cls, rng: calls.append(1) or draw(cls, rng)))
    dataset = ScaredSequenceDataset(scenes, read_split(scenes / "splits" / "synthetic" / "train_files.txt"), 64, 96,
                                    train=True, jitter_per_item=per_item)
    augmented = 0
    for index in range(len(dataset)):
        before = len(calls)
        item = dataset[index]
        if len(calls) > before:
            augmented += 1
            assert len(calls) - before == draws
            assert not torch.equal(item[("color_aug", 0, 0)], item[("color", 0, 0)])
    assert 0 < augmented < len(dataset)  # half the items, as the official's random() > 0.5


def test_depth_supervision_is_an_option_measured_in_millimetres(scenes, tmp_path):
    """Off by default (the official method is self-supervised); on, items carry the ground truth and the term is
    |log(depth x the network's unit) - log(ground truth)| over pixels that have it."""
    from dares_core.train import Trainer

    assert TrainConfig().depth_supervision == 0.0
    trainer = Trainer(config(scenes, tmp_path / "run", depth_supervision=0.5, stereo=True, stereo_baseline=0.05))
    assert trainer.models["depth"].config.depth_unit_mm == pytest.approx(4.5 / 0.05)  # calibrated / nominal
    gt = trainer.train_set[0]["depth_gt"][None]
    assert gt.shape == (1, 1, 64, 96) and (gt > 20).float().mean() > 0.99
    unit = trainer.models["depth"].config.depth_unit_mm
    assert float(trainer.depth_supervision_loss(gt / unit, gt)) == pytest.approx(0.0, abs=1e-6)
    assert float(trainer.depth_supervision_loss(2 * gt / unit, gt)) == pytest.approx(np.log(2), rel=1e-5)
    gt[..., :10] = 0  # no ground truth there: not counted
    assert float(trainer.depth_supervision_loss(2 * gt.clamp_min(1) / unit, gt)) == pytest.approx(np.log(2), rel=1e-5)
    result = trainer.train_step(default_collate([trainer.train_set[i] for i in range(2)]))
    assert set(result["terms"]) >= {f"depth_supervision/{s}" for s in range(4)}


def test_a_run_keeps_the_depth_unit_of_the_network_it_starts_from_unless_stereo_sets_one(scenes, tmp_path):
    """Fine-tuning the demo model (180 mm a unit) on monocular video keeps 180: relabelling it nominal mm would
    make its depth, and the pose translation learnt beside it, 180 times too short."""
    from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig
    from dares_core.model.weights import save_depth_net
    from dares_core.train import Trainer

    net = DaresDepthNet(DepthNetConfig.dares("tiny", hf_config=TINY))
    net.config.depth_unit_mm = 180.0
    save_depth_net(net, tmp_path / "start.safetensors")
    start = str(tmp_path / "start.safetensors")
    assert Trainer(config(scenes, tmp_path / "a", weights=start)).models["depth"].config.depth_unit_mm == 180.0
    assert Trainer(config(scenes, tmp_path / "b")).models["depth"].config.depth_unit_mm == 1.0  # DARES: nominal mm
    stereo = Trainer(config(scenes, tmp_path / "c", weights=start, stereo=True, stereo_baseline=0.05))
    assert stereo.models["depth"].config.depth_unit_mm == pytest.approx(4.5 / 0.05)  # calibrated / nominal


def test_narrow_pose_networks_train_and_export_as_one_file(scenes, tmp_path, capsys):
    """af_width narrows the three AF-SfMLearner ResNets; the pose pair of the run exports to one safetensors
    (without the unused classifier) that loads to the same networks as the run folder."""
    from dares_core.model.weights import load_depth_net
    from dares_core.pose import load_pose_net, pose_units, poses_of_pairs

    run_training(config(scenes, tmp_path / "run", af_width=8, num_epochs=1, max_steps_per_epoch=1), progress=False)
    out = tmp_path / "pose.safetensors"
    assert main(["export", "--network", "pose", "--weights", str(tmp_path / "run"), "--out", str(out)]) == 0
    pairs = torch.rand(2, 6, 64, 96, generator=torch.Generator().manual_seed(0))
    from_run, exported = load_pose_net(tmp_path / "run"), load_pose_net(out)
    assert exported.encoder.num_ch_enc == (8, 8, 16, 32, 64)
    # the size it trained at travels with it (the odometry node and `dares pose` default to it)
    units = pose_units(out)
    assert units == pose_units(tmp_path / "run" / "checkpoints" / "last.pt") and units.input_size == (64, 96)
    assert units.unit_mm == load_depth_net(tmp_path / "run" / "depth_model_last.safetensors").config.depth_unit_mm
    assert np.array_equal(poses_of_pairs(from_run, pairs), poses_of_pairs(exported, pairs))
    with safe_open(str(out), framework="pt") as f:
        keys = set(f.keys())
    assert "pose.net.0.weight" in keys and not any(".fc." in k for k in keys)
    assert main(["export", "--network", "pose", "--weights", str(tmp_path / "run"), "--out", str(out)]) == 2
    assert main(["export", "--network", "pose", "--format", "onnx", "--weights", str(tmp_path / "run"), "--out",
                 str(tmp_path / "pose.onnx")]) == 2
    assert "drop --format" in capsys.readouterr().err
    with pytest.raises(DaresError, match="af_width 64"):
        TrainConfig.from_sources(None, {"data": str(scenes), "af_weights": str(tmp_path), "af_width": 8})


def test_pose_supervision_is_an_option_measured_against_the_true_motion(scenes, tmp_path):
    """Each item carries the true target-to-source motion of camera_poses.npz (the pose network's convention,
    mirrored with a flipped image); the loss is the pose error in proportion to that motion."""
    from dares_core.pose import keyframe_sequence
    from dares_core.train import Trainer

    trainer = Trainer(config(scenes, tmp_path / "r", pose_supervision=0.5, num_epochs=1, max_steps_per_epoch=2))
    data = trainer.train_set
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    kinds = set()
    for index, entry in enumerate(data.entries):
        item = data[index]
        entries, motions = keyframe_sequence(scenes, entry.folder)  # frame i -> i+1, as `dares pose` scores
        relative = {e.frame: T for e, T in zip(entries, motions)}
        for f, expected in ((1, relative[entry.frame]), (-1, np.linalg.inv(relative[entry.frame - 1]))):
            got = item[("pose_gt", f)].double().numpy()
            same, mirrored = np.allclose(got, expected, atol=1e-5), np.allclose(got, mirror @ expected @ mirror,
                                                                              atol=1e-5)
            assert same or mirrored, (index, f)
            kinds.add("flipped" if mirrored and not same else "as is")
    assert kinds == {"as is", "flipped"}  # both cases were checked
    truth = item[("pose_gt", 1)][None]
    in_units = truth.clone()
    in_units[:, :3, 3] /= trainer.models["depth"].config.depth_unit_mm
    assert float(trainer.pose_supervision_loss(in_units, truth)) < 1e-6
    assert float(trainer.pose_supervision_loss(torch.eye(4)[None], truth)) == pytest.approx(1.0, rel=1e-5)
    trainer.fit(progress=False)
    assert all(np.isfinite(r["loss"]) for r in losses(tmp_path / "r"))
    with pytest.raises(DaresError, match="temporal neighbours"):
        TrainConfig.from_sources(None, {"data": str(scenes), "pose_supervision": 1.0, "frame_ids": [0],
                                        "stereo": True})


def test_pose_only_trains_the_pose_pair_and_nothing_else(scenes, tmp_path):
    from dares_core.train import Trainer

    trainer = Trainer(config(scenes, tmp_path / "r", pose_only=True, pose_supervision=1.0, num_epochs=1,
                             max_steps_per_epoch=2))
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in trainer.models.items()}
    trainer.fit(progress=False)
    changed = {name for name, m in trainer.models.items()
               if any(not torch.equal(before[name][k], v) for k, v in m.state_dict().items())}
    assert changed == {"pose_encoder", "pose"}
    assert all(np.isfinite(r["loss"]) and r["loss_position"] == 0 for r in losses(tmp_path / "r"))
    # validated (and its best epoch chosen) by the pose error on the val split, not by the untouched depth
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert 0 < metrics[-1]["pose_error"] < 10 and "abs_rel" not in metrics[-1]
    with pytest.raises(DaresError, match="set pose_supervision > 0"):
        TrainConfig.from_sources(None, {"data": str(scenes), "pose_only": True})
