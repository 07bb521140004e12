"""The reference made from the code, so that it cannot drift: each node's params file in config/ and its parameter
table in docs/nodes.md (from its ParamTable), docs/cli.md (from the `dares` parsers) and the README's headline
figures (from bench/results). `python -m dares_ros.tools.reference` writes them all again; test_reference fails,
naming this command, when one differs from what the code makes.

In a hand-written page a generated part stands between `<!-- generated: NAME -->` and `<!-- end: NAME -->`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the source checkout
COMMAND = "python -m dares_ros.tools.reference"


def node_tables() -> dict:
    """{executable: its ParamTable}, in the order the docs list the nodes."""
    from ..depth_node import PARAMETERS as DEPTH
    from ..fusion_node import PARAMETERS as FUSION
    from ..odometry_node import PARAMETERS as ODOMETRY

    return {"dares_depth_node": DEPTH, "dares_odometry_node": ODOMETRY, "dares_fusion_node": FUSION}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | default | description |", "| --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(action.option_strings) or action.dest
        if action.option_strings and action.nargs != 0:
            name += f" {action.metavar or action.dest.upper()}"
        unset = action.default is None or action.default is False or action.default == [] or \
            action.default == argparse.SUPPRESS
        default = "" if unset or action.required else f"`{action.default}`"
        choices = f" (one of {', '.join(map(str, action.choices))})" if action.choices else ""
        rows.append(f"| `{name}` | {'required' if action.required else default} | "
                    f"{_cell((action.help or '').replace('%%', '%'))}{choices} |")
    return rows


def cli_reference() -> str:
    """docs/cli.md: every `dares` command and subcommand, its description and its options."""
    from dares_core.cli import build_parser

    lines = ["# The `dares` command line", "", f"Generated from the parsers by `{COMMAND}`; do not edit by hand. "
             "`dares COMMAND --help` says the same.", ""]

    def walk(parser: argparse.ArgumentParser, name: str, level: int) -> None:
        lines.extend([f"{'#' * level} `{name}`", "", _cell(parser.description or ""), ""])
        if any(a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))):
            lines.extend([*_options_table(parser), ""])
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in action._choices_actions}
                for sub_name, sub in action.choices.items():
                    sub.description = sub.description or helps.get(sub_name, "")
                    walk(sub, f"{name} {sub_name}", min(level + 1, 3))

    root = build_parser()
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                walk(sub, f"dares {sub_name}", 2)
    return "\n".join(lines).rstrip() + "\n"


HEADLINES = (  # (what, result file, how the figure is read from it)
    ("node's own cost a frame, 1280x1024 stereo, network stood in (CPU, 2 cores)",
     "node-cpu-256x320-30.0-fp32-stereo-left-stand-in.json",
     lambda r: f"{r['paths']['node depth']['stages_ms']['own']:.1f} ms"),
    ("stereo scale error per frame, sparse matches (unseen scenes)", "stereo-scale-demo_model-320x256.json",
     lambda r: f"{r['paths']['sparse, every frame']['mean_abs_error']:.1%} mean abs"),
    ("depth stabiliser in the node, TAE off -> on (unseen scenes)", "node-temporal-320x256.json",
     lambda r: f"{r['paths']['plain']['tae']:.4f} -> {r['paths']['stabilised']['tae']:.4f}"),
    ("ViT-S network, our path against the official-style one (CPU fp32)", "model-cpu-vits-256x320-1-fp32.json",
     lambda r: f"{r['speedup']}x"),
    ("ViT-S network on ONNX Runtime against the official-style one (CPU fp32)",
     "model-cpu-vits-256x320-1-fp32-onnxruntime-cpu.json",
     lambda r: f"{r['paths']['ours onnxruntime CPUExecutionProvider']['speedup']}x"),
    ("confidence, AUSE against random's, mono (unseen scenes; 1 is chance)", "confidence-demo_model-320x256.json",
     lambda r: f"{r['paths']['mono']['ause_ratio_mean']:.2f}"),
    ("fine-tuned on 36 s of a scope it never saw, held-out AbsRel before -> after",
     "fine-tune-bag-3-recordings-8-epochs.json",
     lambda r: "{:.3f} -> {:.3f}".format(*(sum(s[k] for s in r["paths"]["built-in model fine-tuned"]["abs_rel"]
                                                .values()) / len(r["paths"]["built-in model fine-tuned"]["abs_rel"])
                                           for k in ("start", "fine_tuned")))),
)


def headline_table() -> str:
    """The README's headline figures, each read from its result file and linked to docs/benchmarks.md."""
    rows = ["| what | figure | measured |", "| --- | --- | --- |"]
    for what, file, figure in HEADLINES:
        record = json.loads((ROOT / "bench" / "results" / file).read_text())
        rows.append(f"| {what} | {figure(record)} | [{file}](bench/results/{file}), "
                    f"{record.get('date', '')} |")
    return "\n".join(rows)


def generated_parts() -> dict[str, str]:
    """{name of a generated part: its text}."""
    parts = {f"parameters {name}": table.markdown_table() for name, table in node_tables().items()}
    parts["headlines"] = headline_table()
    return parts


PART = re.compile(r"(<!-- generated: (?P<name>[^>]+?) -->\n)(?:.*?\n)?(<!-- end: (?P=name) -->)", re.S)


def filled(text: str, parts: dict[str, str]) -> str:
    """`text` with each of its generated parts made anew."""
    return PART.sub(lambda m: m.group(1) + parts[m.group("name")] + "\n" + m.group(3), text)


def reference_files() -> dict[Path, str]:
    """{path relative to the checkout: the text the code makes}."""
    from ..params import config_name

    files = {Path("config") / config_name(name): table.config_yaml(name) for name, table in node_tables().items()}
    files[Path("docs/cli.md")] = cli_reference()
    parts = generated_parts()
    for page in (Path("README.md"), Path("docs/nodes.md")):
        if (ROOT / page).is_file():
            files[page] = filled((ROOT / page).read_text(), parts)
    return files


def main() -> int:
    from dares_core.files import atomic_file

    for path, text in reference_files().items():
        if (ROOT / path).is_file() and (ROOT / path).read_text() == text:
            continue
        with atomic_file(ROOT / path) as tmp:
            tmp.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
