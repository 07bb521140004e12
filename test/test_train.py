"""Training: exact resume, data-parallel equivalence, the method's pieces, and clear configuration errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from dares_core.cli import main
from dares_core.data.synthetic import SynthConfig, generate
from dares_core.errors import DaresError
from dares_core.train import TrainConfig, run_training
from test_infer import TINY


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate(SynthConfig(width=128, height=96, frames=8, sequences=3, seed=5), tmp_path_factory.mktemp("t") / "s")


def config(scenes, out, **kw):
    values = dict(data=str(scenes), out=str(out), hf_config=TINY, encoder="tiny", train_backbone=True, height=64,
                  width=96, batch_size=2, num_workers=0, device="cpu", num_epochs=2, max_steps_per_epoch=3, seed=3)
    values.update(kw)
    return TrainConfig(**values)


def losses(run):
    return [json.loads(line) for line in (Path(run) / "losses.jsonl").read_text().splitlines()]


def test_resumed_run_matches_uninterrupted_step_for_step(scenes, tmp_path):
    run_training(config(scenes, tmp_path / "a"), progress=False)
    run_training(config(scenes, tmp_path / "b", num_epochs=1), progress=False)
    run_training(config(scenes, tmp_path / "b", num_epochs=2), resume=tmp_path / "b", progress=False)
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6) and x["loss_position"] == pytest.approx(y["loss_position"], abs=1e-6)
    assert (tmp_path / "b" / "checkpoints" / "best.pt").is_file() and (tmp_path / "b" / "depth_model.safetensors").is_file()
    metrics = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and "abs_rel" in metrics[0]


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
    """torchrun with 2 CPU processes (gloo) and the same global batch gives the single-process losses: gradients
    averaged, BatchNorm statistics, masked means and the batch MS-SSIM all taken over the global batch."""
    cfg = config(scenes, tmp_path / "single", num_epochs=1, max_steps_per_epoch=2, batch_size=2)
    run_training(cfg, progress=False)
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump({**cfg.__dict__, "out": str(tmp_path / "ddp")}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dares_core.cli",
           "train", "--config", str(cfg_file)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    single, ddp = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == [1, 2]
    for x, y in zip(single, ddp):
        assert abs(x["loss"] - y["loss"]) < 1e-4 and abs(x["loss_position"] - y["loss_position"]) < 1e-4, (x, y)
    # and the same weights and BatchNorm running statistics after the steps
    a, b = (torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True)["models"] for run in ("single", "ddp"))
    assert any(k.endswith("running_var") for k in a["pose_encoder"])
    for name in a:
        for key, value in a[name].items():
            assert torch.allclose(value.float(), b[name][key].float(), atol=1e-4), (name, key)


def test_configuration_errors_are_one_line(scenes, tmp_path, capsys):
    with pytest.raises(DaresError, match="multiples of 32"):
        TrainConfig.from_sources(None, {"data": str(scenes), "height": 100})
    with pytest.raises(DaresError, match="unknown training option"):
        TrainConfig.from_sources(None, {"data": str(scenes), "learning_rat": 1})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert main(["train", "--data", str(scenes), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
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
    released = {"pose_encoder": ResnetEncoder(2), "pose": PoseDecoder(), "position_encoder": ResnetEncoder(2),
                "position": PositionDecoder(), "transform_encoder": ResnetEncoder(2), "transform": TransformDecoder()}
    folder = tmp_path / "af_sfmlearner_weights"
    folder.mkdir()
    for name, model in released.items():
        torch.save(model.state_dict(), folder / f"{name}.pth")
    assert "encoder.layer4.1.bn2.running_var" in torch.load(folder / "pose_encoder.pth")
    trainer = Trainer(config(scenes, tmp_path / "r", af_weights=str(folder)))
    for name, model in released.items():
        for key, value in model.state_dict().items():
            assert torch.equal(trainer.models[name].state_dict()[key], value), (name, key)
    (folder / "pose.pth").write_bytes(b"")
    with pytest.raises(DaresError, match="pose.pth: file is empty"):
        Trainer(config(scenes, tmp_path / "r2", af_weights=str(folder)))


def test_sigkill_at_any_moment_never_loses_the_last_good_checkpoint(scenes, tmp_path):
    """Kill training (SIGKILL) at spread-out moments, checkpoint writes included; resume each time; the
    finished run equals an uninterrupted one."""
    import signal

    cfg = config(scenes, tmp_path / "ref", num_epochs=6, max_steps_per_epoch=1)
    run_training(cfg, progress=False)
    run = tmp_path / "crashy"
    cfg_file = tmp_path / "crashy.yaml"
    cfg_file.write_text(yaml.safe_dump({**cfg.__dict__, "out": str(run)}))
    base = [sys.executable, "-m", "dares_core.cli", "train", "--config", str(cfg_file)]
    kills = 0
    for delay in (9.0, 11.5, 13.0, 14.5):  # model start-up takes ~8 s; epochs (1 step + checkpoint) ~1 s each
        last = run / "checkpoints" / "last.pt"
        cmd = base + (["--resume", str(run)] if last.is_file() else (["--force"] if run.exists() else []))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if last.is_file():  # whatever moment the kill hit, the checkpoint on disk is whole
            assert torch.load(last, weights_only=True)["global_step"] >= 1
    assert kills >= 2
    cmd = base + (["--resume", str(run)] if (run / "checkpoints" / "last.pt").is_file() else ["--force"])
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    a, b = losses(tmp_path / "ref"), losses(run)
    assert [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)
    assert not list((run / "checkpoints").glob(".*partial*"))
