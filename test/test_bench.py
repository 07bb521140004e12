"""Benchmarks: the fast path equals the reference path, and results publish JSON plus the docs table."""

import json

import pytest
import torch
from helpers import TINY

from dares_core.bench.fusion import bench_fusion
from dares_core.bench.model import bench_model
from dares_core.bench.resize import bench_resize
from dares_core.bench.results import render_docs, result_name, write_result
from dares_core.bench.stereo_scale import bench_stereo_scale
from dares_core.bench.temporal import bench_temporal
from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig
from dares_core.model.weights import save_depth_net
from dares_ros.names import FINE_TUNE_SOURCES
from dares_ros.tools.bench.fine_tune import bench_fine_tune
from dares_ros.tools.bench.node import bench_node
from dares_ros.tools.bench.node_temporal import bench_node_temporal


def test_model_bench_compares_equal_outputs_and_publishes(tmp_path):
    record = bench_model("vits", 56, 70, rounds=1, calls=1)
    assert record["paths"]["ours"]["max_abs_diff_disparity"] < 1e-4  # deployment path == official-style path at fp32
    assert 0 <= record["paths"]["ours"]["depth_relative_p99"] <= record["paths"]["ours"]["depth_relative_max"] < 1e-4
    assert set(record["paths"]) == {"reference", "ours"} and record["speedup"] == record["paths"]["ours"]["speedup"] > 0
    name = result_name(record, "encoder", "input", "batch", "precision")
    assert name == "model-cpu-vits-56x70-1-fp32"
    path = write_result(name, record, tmp_path / "results", tmp_path / "benchmarks.md")
    assert json.loads(path.read_text())["benchmark"] == "model"
    table = (tmp_path / "benchmarks.md").read_text()
    assert "| model | cpu |" in table and name + ".json" in table and "**pending**" in table
    render_docs(tmp_path / "results", tmp_path / "again.md")
    assert (tmp_path / "again.md").read_text() == table


def test_pose_bench_runs_the_pose_network_on_onnxruntime_with_torchs_poses(tmp_path, monkeypatch):
    from dares_core.bench.pose import bench_pose

    monkeypatch.setenv("DARES_CACHE", str(tmp_path))
    record = bench_pose(64, 80, rounds=1, calls=1, providers=("cpu",))
    assert set(record["paths"]) == {"reference", "ours onnxruntime CPUExecutionProvider"}
    ours = record["paths"]["ours onnxruntime CPUExecutionProvider"]
    assert ours["max_abs_diff_pose"] < 1e-6 and ours["speedup"] == record["speedup"] > 0
    from dares_core.bench.results import backend_suffix

    assert result_name(record, "input") + backend_suffix(record) == "pose-cpu-64x80-onnxruntime-cpu"


def test_docs_flag_a_reduced_precision_path_whose_output_equals_fp32(tmp_path):
    """Such a path cannot have computed in its precision (seen on an H200: compiled fp16 gave fp32's output)."""
    results = tmp_path / "results"
    results.mkdir()
    for name, worst in (("applied", 2e-3), ("ignored", 2e-7)):
        record = {"benchmark": "model", "machine": {"device": "NVIDIA H200"},
                  "settings": {"precision": "fp16", "run": name},
                  "paths": {"ours": {"median_ms": 1.0, "depth_relative_p99": worst / 2, "depth_relative_max": worst}}}
        (results / f"{name}.json").write_text(json.dumps(record))
    render_docs(results, tmp_path / "benchmarks.md")
    rows = {line.split("run=")[1].split(" ")[0]: line for line in (tmp_path / "benchmarks.md").read_text().splitlines()
            if "run=" in line}
    assert "| 1.0e-03 |" in rows["applied"] and "not computed in fp16" not in rows["applied"]
    assert "1.0e-07 (equals fp32: not computed in fp16)" in rows["ignored"]
    assert "still **pending**: node at 1280x1024 stereo 60 Hz, training" in (tmp_path / "benchmarks.md").read_text()


def test_resize_bench_compares_the_two_preprocessings_and_publishes_its_table(tmp_path):
    record = bench_resize(width=320, height=256, seeds=(4, 5))
    m = record["paths"]["on-device resize vs official"]
    assert m["frames"] == 4 and 0 < m["median_rel_depth"] <= m["p99_rel_depth"] <= m["max_rel_depth"] < 0.05
    write_result("resize-demo", record, tmp_path / "results", tmp_path / "benchmarks.md")
    table = (tmp_path / "benchmarks.md").read_text()
    assert "| cpu | model=demo_model.safetensors, input=128x160, frames=320x256" in table
    assert "resize-demo.json" in table


def test_fusion_bench_counts_the_frames_it_integrates(tmp_path):
    record = bench_fusion(width=96, height=80, frames=4, voxel_mm=2.0)
    m = record["paths"]["tsdf integrate"]
    assert m["calls"] == 3 and m["throughput_fps"] > 0 and m["vertices"] > 100  # the first frame is not timed
    assert result_name(record, "frames", "voxel_mm") == "fusion-cpu-96x80-2.0"


def test_stereo_scale_bench_measures_every_way_of_the_node_against_ground_truth(tmp_path):
    record = bench_stereo_scale(width=160, height=128, frames=6, seeds=(3, 4), rate=2.0)
    sparse, every, worker = (record["paths"][label] for label in ("sparse, every frame", "sgbm, every frame",
                                                                  "sgbm, worker at 2 Hz"))
    assert sparse["frames"] == every["frames"] == worker["frames"] == 12
    assert sparse["measurements"] == every["measurements"] == 12  # each frame's own pair
    assert 2 <= worker["measurements"] < 12  # the first frame of each scene, then at most 2 a second from 25 Hz
    for m in (sparse, every, worker):  # the demo model's stereo scale on these scenes is within tens of percent
        assert abs(m["median_error"]) < 0.5 and 0 < m["mean_abs_error"] < 0.5 and m["frame_path_ms"] > 0
    write_result("stereo-scale-demo", record, tmp_path / "results", tmp_path / "benchmarks.md")
    assert "| sgbm, worker at 2 Hz |" in (tmp_path / "benchmarks.md").read_text()


def test_temporal_bench_scores_plain_and_stabilised_depth_against_the_floor(tmp_path):
    record = bench_temporal(width=160, height=128, frames=6, seeds=(3,))
    plain, stabilised = record["seeds"][3]["plain"], record["seeds"][3]["stabilised"]
    assert plain["tae_floor"] == stabilised["tae_floor"] < stabilised["tae"] < plain["tae"]  # the motion of the pose
    # network, not the truth's: the stabilised depth holds stiller, yet not as still as the ground truth
    assert abs(stabilised["abs_rel"] - plain["abs_rel"]) < 0.01 and record["paths"]["plain"] == plain
    write_result("temporal-demo", record, tmp_path / "results", tmp_path / "benchmarks.md")
    assert f"| 3 | {plain['tae']:.4f} | {stabilised['tae']:.4f} |" in (tmp_path / "benchmarks.md").read_text()


def test_node_temporal_bench_replays_the_demo_graph_with_and_without_the_stabiliser(tmp_path):
    record = bench_node_temporal(seeds=(3,), frames=6, size=(160, 128))
    plain, stabilised = record["seeds"][3]["plain"], record["seeds"][3]["stabilised"]
    assert plain["tae_floor"] == stabilised["tae_floor"] < stabilised["tae"] < plain["tae"]  # the odometry node's
    # motion, not the truth's
    assert abs(stabilised["abs_rel"] - plain["abs_rel"]) < 0.01 and 0 < plain["abs_rel_instruments"] < 0.3
    write_result("node-temporal-test", record, tmp_path / "results", tmp_path / "benchmarks.md")
    docs = (tmp_path / "benchmarks.md").read_text()
    assert f"| 3 | {plain['tae']:.4f} | {stabilised['tae']:.4f} |" in docs and "`dares bench node-temporal`" in docs


@pytest.mark.parametrize("source", FINE_TUNE_SOURCES)
def test_fine_tune_bench_runs_the_own_endoscope_loop_and_scores_both_models(tmp_path, source):
    record = bench_fine_tune(recordings=(3,), frames=120, test_seeds=(4,), epochs=1, max_steps=2, source=source)
    run = record["paths"]["built-in model fine-tuned"]
    assert 10 < run["kept_frames"] < 120 and record["settings"]["video_s"] == 4.8  # frames with motion, of 120
    score = run["abs_rel"][4]
    assert 0 < score["start"] < 0.3 and 0 < score["fine_tuned"] < 0.5 and score["start"] != score["fine_tuned"]
    write_result("fine-tune-test", record, tmp_path / "results", tmp_path / "benchmarks.md")
    assert f"| 4 | {score['start']:.4f} | {score['fine_tuned']:.4f} |" in (tmp_path / "benchmarks.md").read_text()


def test_node_bench_measures_both_eyes_and_the_stabiliser_end_to_end(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_depth_net(DaresDepthNet(DepthNetConfig.dares("tiny", hf_config=TINY)), weights)
    root = generate(SynthConfig(width=288, height=224, frames=3, sequences=1, seed=2), tmp_path / "scene")
    record = bench_node(weights, rate=5.0, duration=3.0, warmup=1.0, input_size=(56, 70), eyes="both",
                        sequence=root / sequence_folder(0),  # a recorded sequence, not the default generated scene
                        temporal_weight=0.5)  # with the stabiliser, a still camera's pose at every frame
    assert set(record["paths"]) == {"node depth", "node points", "node right depth"}
    paths = record["paths"]
    for path in paths.values():  # how many frames a loaded machine keeps up with is the benchmark's figure, not ours
        assert path["published"] == 15 and 1 <= path["received"] <= 15 and path["median_ms"] > 0
    assert paths["node right depth"]["received"] == paths["node depth"]["received"]  # both eyes in one batch
    assert record["settings"]["eyes"] == "both" and record["settings"]["compile"] is False
    assert record["settings"]["input"] == "288x224 stereo"  # the sequence's own image size
    stages = paths["node depth"]["stages_ms"]  # the node's diagnostics, once a second
    assert stages["temporal"] > 0 and stages["own"] >= stages["temporal"] and stages["network"] > 0, stages


def test_benchmarks_run_elsewhere_never_touch_that_folders_docs(tmp_path, monkeypatch, capsys):
    """Run in a user's project: its docs/benchmarks.md and bench/ stay as they were; results go to ./dares_bench,
    and a result is not replaced without --force."""
    from dares_core.cli import main

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks.md").write_text("my own benchmarks")
    monkeypatch.chdir(tmp_path)
    run = ["bench", "model", "--height", "56", "--width", "70", "--rounds", "1", "--calls", "1"]
    assert main(run) == 0
    assert (tmp_path / "docs" / "benchmarks.md").read_text() == "my own benchmarks"
    assert not (tmp_path / "bench").exists()
    assert [p.name for p in (tmp_path / "dares_bench" / "results").iterdir()] == ["model-cpu-vits-56x70-1-fp32.json"]
    assert "| model | cpu |" in (tmp_path / "dares_bench" / "benchmarks.md").read_text()
    capsys.readouterr()
    assert main(run) == 2 and "pass --force" in capsys.readouterr().err
    assert main([*run, "--force"]) == 0


def test_a_bench_refuses_an_out_it_cannot_use_before_measuring(tmp_path, monkeypatch, capsys):
    """--out a file, or a folder whose benchmarks.md dares bench did not write: refused before anything is measured;
    a JSON beside the results that is none is named in the table and left out; a result whose name is known
    before the run is refused first too, without --force."""
    from dares_core.bench import registered
    from dares_core.bench.results import render_docs
    from dares_core.cli import main

    def measured(*_, **__):
        raise AssertionError("measured before the destination was checked")

    for kind in ("temporal", "model"):
        monkeypatch.setattr(type(registered()[kind]), "measure", measured)
    run = ["bench", "model", "--height", "56", "--width", "70", "--rounds", "1", "--calls", "1", "--out"]
    (tmp_path / "a_file").write_text("mine")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "benchmarks.md").write_text("# my notes")
    for out, message in (("a_file", "is a file: give --out a folder"), ("theirs", "was not written by dares bench")):
        assert main([*run, str(tmp_path / out), "--force"]) == 2 and message in capsys.readouterr().err
    assert (tmp_path / "a_file").read_text() == "mine" and (tmp_path / "theirs" / "benchmarks.md").read_text() == \
        "# my notes"
    results = tmp_path / "ours" / "results"
    results.mkdir(parents=True)
    (results / "temporal-demo_model-320x256.json").write_text("{}")  # not a result: named in the table, left out
    render_docs(results, tmp_path / "ours" / "benchmarks.md")
    assert "Left out, not results of dares bench: temporal-demo_model-320x256.json." in \
        (tmp_path / "ours" / "benchmarks.md").read_text()
    assert main(["bench", "temporal", "--out", str(tmp_path / "ours")]) == 2
    assert "temporal-demo_model-320x256.json already exists: pass --force" in capsys.readouterr().err
