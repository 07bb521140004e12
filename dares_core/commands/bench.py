"""`dares bench KIND`: a registered benchmark measured, its result written and the docs page made again."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "bench"
HELP = "benchmarks that write bench/results/*.json and docs/benchmarks.md"
DESCRIPTION = "Measure our paths against the reference path and publish the figures."


def add_arguments(p) -> None:
    from ..bench import registered

    kinds = p.add_subparsers(dest="bench", metavar="KIND", required=True)
    for bench in registered().values():
        q = kinds.add_parser(bench.kind, help=bench.help)
        bench.add_arguments(q)
        q.add_argument("--out", type=Path, default=None,
                       help="folder for results/NAME.json and benchmarks.md (default: ./dares_bench; run from the "
                            "dares repository's root without --out: its bench/results and docs/benchmarks.md)")
        q.add_argument("--force", action="store_true", help="replace an existing result of the same name")
        q.set_defaults(benchmark=bench)


def run(args: argparse.Namespace) -> None:
    from ..bench.results import check_bench_output, publish_result

    bench = args.benchmark
    check_bench_output(args.out, args.force, bench.name_before(args))  # before anything is measured
    record = bench.measure(args)
    print(bench.report(record, publish_result(args, bench.name(args, record), record)))
