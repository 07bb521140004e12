"""Benchmarks that publish their figures: JSON under bench/results/ and a table in docs/benchmarks.md.

Each benchmark is a Benchmark, one module each: its `dares bench KIND` options, its measurement (our path side by
side, interleaved in one run, with the reference way of running the same network where there is one, so the ratio
holds on a noisy machine), its result's name, what it prints, and its part of the docs page. The page is a loop over
the registered benchmarks (results.render_docs); dares_ros registers the ROS ones through the `dares.benchmarks`
entry point, so dares_core never imports ROS. Modules import torch and friends inside the measurement only: the
command line is built from every benchmark's options before anything heavy loads.
"""

from __future__ import annotations

import argparse


class Benchmark:
    """One `dares bench KIND`. kind: the subcommand and the record's "benchmark"; timing: its paths are rows of
    the page's timing table (median, p99, throughput, memory, speedup); gpu_target: the figure a GPU run of it
    gives, named as pending on the page until one is measured; title, prose, columns: its own section of the
    page, when rows() gives it rows."""

    kind = ""
    help = ""
    timing = False
    gpu_target = ""
    title = ""
    prose: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """Its options (--out and --force are every benchmark's)."""

    def name_before(self, args: argparse.Namespace) -> str | None:
        """Its result's name when the options alone give it (an existing one is refused before measuring)."""
        return None

    def measure(self, args: argparse.Namespace) -> dict:
        """The record: {"benchmark": kind, "machine", "settings", "paths", ...}."""
        raise NotImplementedError

    def name(self, args: argparse.Namespace, record: dict) -> str:
        return self.name_before(args)

    def report(self, record: dict, path) -> str:
        """What the command prints once the result is written to `path`."""
        return f"wrote {path}"

    def rows(self, record: dict, file: str) -> list[str]:
        """Rows of its own section for one result."""
        return []

    def section(self, results: list[tuple[str, dict]]) -> list[str]:
        """Its lines of docs/benchmarks.md, from its results [(file name, record)] in file order."""
        return table_section(self.title, self.prose, self.columns,
                             [row for file, record in results for row in self.rows(record, file)])


def table_section(title: str, prose: tuple[str, ...], columns: tuple[str, ...], rows: list[str]) -> list[str]:
    """A section of docs/benchmarks.md: its title, its text and a table of `columns` holding `rows` (none without
    rows)."""
    if not rows:
        return []
    return [f"## {title}", "", *prose, "", "| " + " | ".join(columns) + " |",
            "| " + " | ".join("---" for _ in columns) + " |", *rows, ""]


def registered() -> dict[str, Benchmark]:
    """Every benchmark, by kind: dares_core's, then those of the `dares.benchmarks` entry points (dares_ros)."""
    from importlib.metadata import entry_points

    from . import confidence, fusion, model, pose, resize, stereo_scale, temporal, train

    found = [model.BENCHMARK, pose.BENCHMARK, train.BENCHMARK, resize.BENCHMARK, fusion.BENCHMARK,
             stereo_scale.BENCHMARK, temporal.BENCHMARK, confidence.BENCHMARK]
    for ep in entry_points(group="dares.benchmarks"):
        found += ep.load()
    return {bench.kind: bench for bench in found}
