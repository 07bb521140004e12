"""The one parameter scheme of the dares nodes: a ParamTable of Param (type, default, range or choices, live or
start-only, description) and the rules between them, with one check. A node declares its table with declare();
`--help` (usage), `ros2 param describe` (the descriptors), config/*.yaml (config_yaml) and the docs tables
(markdown_table) are all made from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROS_TYPE_NAMES = {bool: "bool", int: "integer", float: "double", str: "string"}


@dataclass(frozen=True)
class Param:
    """A node parameter: its type is the default's; range (inclusive) for numbers, choices for strings; live: it may
    change while the node runs (else it applies at start); zero_means: what 0 stands for when 0 is allowed outside
    the range."""

    default: Any
    description: str
    live: bool = False
    range: tuple | None = None
    choices: tuple | None = None
    zero_means: str = ""

    def allowed(self) -> str:
        """What the parameter accepts, in words."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        text = ROS_TYPE_NAMES[type(self.default)]
        if self.range:
            text += f" from {self.range[0]} to {self.range[1]}"
        if self.zero_means:
            text += f", or 0 for {self.zero_means}"
        return text

    def problem(self, name: str, value) -> str:
        """"" when `value` is allowed, else one line naming the parameter, the value and what is allowed."""
        kind = type(self.default)
        ok = type(value) in (int, float) if kind is float else type(value) is kind  # an integer serves a double
        ok = ok and not (self.choices and value not in self.choices)
        if ok and self.range and not (self.zero_means and value == 0):
            ok = self.range[0] <= value <= self.range[1]
        return "" if ok else f"parameter {name}: {value!r} is not allowed: give {self.allowed()}"


@dataclass(frozen=True)
class Rule:
    """A condition between start-up parameters: holds(values) is true when they go together; problem: the line
    that says why not and what to give."""

    holds: Callable[[dict], bool]
    problem: str


class ParamTable(dict):
    """A node's parameters by name, in the order --help and the docs list them, and the rules between them."""

    def __init__(self, params: dict[str, Param], rules: tuple[Rule, ...] = ()):
        super().__init__(params)
        self.rules = rules

    def problem(self, values: dict) -> str:
        """The first problem of a set of values (each value's own, then the rules), or ""."""
        found = next(filter(None, (self[name].problem(name, value) for name, value in values.items()
                                   if name in self)), "")
        return found or next((rule.problem for rule in self.rules if not rule.holds(values)), "")

    def declare(self, node, on_change: Callable | None = None) -> str:
        """Declare every parameter on `node` (dynamic typing, so that a wrong type reaches the check and gets its
        one line), check live changes by the same rule, then hand each accepted one to on_change(param) -> "" or
        why it is refused; returns the problem of the start-up values, or ""."""
        from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

        for name, p in self.items():
            node.declare_parameter(name, p.default, ParameterDescriptor(
                name=name, description=p.description, read_only=not p.live, dynamic_typing=True,
                additional_constraints=p.allowed()))

        def on_set(params) -> SetParametersResult:
            for param in params:
                error = self[param.name].problem(param.name, param.value) if param.name in self else ""
                error = error or (on_change(param) if on_change is not None else "")
                if error:
                    return SetParametersResult(successful=False, reason=error)
            return SetParametersResult(successful=True)

        node.add_on_set_parameters_callback(on_set)
        return self.problem({name: node.get_parameter(name).value for name in self})

    def usage(self, executable: str, summary: str) -> str:
        """What `EXECUTABLE --help` prints: how to run it and every parameter (* can change live)."""
        lines = [f"usage: {executable} [--ros-args [--params-file FILE] [-p NAME:=VALUE ...] [-r FROM:=TO ...]]",
                 "", summary, f"Parameters (* can change live; a params file of them all: {config_name(executable)} "
                              "in $(ros2 pkg prefix dares_ros)/share/dares_ros/config):"]
        for name, p in self.items():
            lines.append(f"  {name}{' *' if p.live else ''} = {p.default!r}  ({p.allowed()})")
            lines.append(f"      {p.description}")
        return "\n".join(lines)

    def config_yaml(self, executable: str) -> str:
        """config/NAME.yaml: every parameter at its default, as `--params-file` reads it."""
        import json

        lines = [f"# Parameters of {executable}, generated from its ParamTable (dares_ros/params.py): do not edit; "
                 "copy it to change values.", f"# `{executable} --help` describes each; live ones change with "
                 f"`ros2 param set /{executable} NAME VALUE`.", "/**:", "  ros__parameters:"]
        lines += [f"    {name}: {json.dumps(p.default)}" for name, p in self.items()]
        return "\n".join(lines) + "\n"

    def markdown_table(self) -> str:
        """The docs table: name, type, default, range or choices, live or start-only, description."""
        rows = ["| parameter | type | default | allowed | when | description |",
                "| --- | --- | --- | --- | --- | --- |"]
        for name, p in self.items():
            rows.append(f"| `{name}` | {ROS_TYPE_NAMES[type(p.default)]} | `{p.default!r}` | {p.allowed()} | "
                        f"{'live' if p.live else 'start'} | {p.description.replace('|', '/')} |")
        return "\n".join(rows)


def config_name(executable: str) -> str:
    """The shipped params file of a node: dares.yaml for the depth node, else dares_<role>.yaml."""
    return "dares.yaml" if executable == "dares_depth_node" else executable.removesuffix("_node") + ".yaml"


def backend_params() -> dict[str, Param]:
    """backend, onnx_providers and backend_check, as the depth and odometry nodes both take them
    (dares_core.backends)."""
    from dares_core.names import BACKENDS

    return {
        "backend": Param("torch", "where the network runs: torch, or onnxruntime on the exported graph (cached), "
                                  "checked against torch at start (backend_check) and refused for torch, with one "
                                  "line, above the tolerance", choices=BACKENDS),
        "onnx_providers": Param("tensorrt,cuda,cpu", "backend onnxruntime: its execution providers in the order to "
                                                     "try them (a missing one is named and the next tried)"),
        "backend_check": Param(True, "backend onnxruntime: run a probe input through it and through torch at start; "
                                     "the largest relative difference goes to the log and diagnostics"),
    }


def providers_rule() -> Rule:
    """onnx_providers names known providers."""
    from dares_core.backends import PROVIDERS, providers_named

    return Rule(lambda v: providers_named(v["onnx_providers"]), f"parameter onnx_providers: give some of "
                                                                f"{', '.join(PROVIDERS)}, comma-separated")
