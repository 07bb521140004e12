"""Benchmarks: the fast path equals the reference path, and results publish JSON plus the docs table."""

import json

from dares_core.bench import bench_model, render_docs, result_name, write_result


def test_model_bench_compares_equal_outputs_and_publishes(tmp_path):
    record = bench_model("vits", 56, 70, rounds=1, calls=1)
    assert record["paths"]["ours"]["max_abs_diff_disparity"] < 1e-4  # deployment path == official-style path at fp32
    assert set(record["paths"]) == {"reference", "ours"} and record["speedup"] == record["paths"]["ours"]["speedup"] > 0
    name = result_name(record, "encoder", "input", "batch", "precision")
    assert name == "model-cpu-vits-56x70-1-fp32"
    path = write_result(name, record, tmp_path / "results", tmp_path / "benchmarks.md")
    assert json.loads(path.read_text())["benchmark"] == "model"
    table = (tmp_path / "benchmarks.md").read_text()
    assert "| model | cpu |" in table and name + ".json" in table and "**pending**" in table
    render_docs(tmp_path / "results", tmp_path / "again.md")
    assert (tmp_path / "again.md").read_text() == table
