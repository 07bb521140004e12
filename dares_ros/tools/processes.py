"""Running dares nodes as processes, for the tools (demo, benchmarks, soak) and the tests: started as
`ros2 run dares_ros <executable>` starts them, watched until they answer, stopped with Ctrl-C, measured."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor

from dares_core.errors import DaresError

from ..graph import config_file
from ..launch_plan import NodeSpec


def spec_command(spec: NodeSpec) -> list[str]:
    """A node of launch_plan as `ros2 launch` starts it: its console entry point with --ros-args (params files,
    -p values, remaps). Only dares_ros nodes: their executables are beside this Python."""
    cmd = [str(Path(sys.executable).parent / spec.executable), *spec.arguments, "--ros-args",
           "-r", f"__node:={spec.name}", "-r", f"__ns:=/{spec.namespace.strip('/')}"]
    for parameters in spec.parameters:
        if isinstance(parameters, dict):
            cmd += [arg for name, value in parameters.items() for arg in ("-p", f"{name}:={value}")]
        else:
            cmd += ["--params-file", str(parameters)]
    return cmd + [arg for src, dst in spec.remappings for arg in ("-r", f"{src}:={dst}")]


def node_command(namespace: str, params: dict, remaps: dict | None = None,
                 executable: str = "dares_depth_node") -> list[str]:
    """A dares node as `ros2 run dares_ros <executable>` starts it; the depth node with the shipped params file."""
    files = [config_file("dares.yaml")] if executable == "dares_depth_node" else []
    return spec_command(NodeSpec("dares_ros", executable, executable, namespace, [*files, params],
                                 list((remaps or {}).items())))


def stop_node(proc: subprocess.Popen) -> None:
    """Ctrl-C, then kill if it has not exited within 10 s."""
    proc.send_signal(2)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def node_session(namespace: str, params: dict, workdir: Path, name: str, remaps: dict | None = None,
                 executable: str = "dares_depth_node"):
    """A dares node (`executable`) running as its console entry point (log in workdir/node.log) and an rclpy
    node `name` of this process spinning in a thread; yields (node process, local node) and tears both down."""
    with node_process(namespace, params, workdir / "node.log", remaps, executable) as proc:
        context = rclpy.Context()
        rclpy.init(args=[], context=context)  # not sys.argv: our own options are no ROS arguments
        node = rclpy.create_node(name, context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            yield proc, node
        finally:
            executor.shutdown()
            spinner.join(timeout=5)
            node.destroy_node()
            rclpy.shutdown(context=context)


@contextlib.contextmanager
def node_process(namespace: str, params: dict, log: Path, remaps: dict | None = None,
                 executable: str = "dares_depth_node"):
    """A dares node running as its console entry point, its output in `log`; Ctrl-C (then kill) when done."""
    with open(log, "w") as out:
        proc = subprocess.Popen(node_command(namespace, params, remaps, executable), stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop_node(proc)


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory in MiB from /proc: VmRSS now, VmHWM its peak; NaN once it is gone."""
    try:
        line = next(s for s in open(f"/proc/{pid}/status") if s.startswith(field))
        return round(int(line.split()[1]) / 1024, 1)
    except (OSError, StopIteration):
        return float("nan")


def wait_until_loaded(proc: subprocess.Popen, log: Path, timeout: float = 180.0, ready: str = " loaded ",
                      node: str = "the depth node") -> None:
    """Block until `node` logs `ready` (the depth node: its model loaded); a model load error, a FATAL line (the node
    is ending: its exit may take a while on a busy graph) or an exit becomes a DaresError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.is_file() else ""
        if ready in text:
            return
        errors = [line for line in text.splitlines() if "ERROR" in line and "weights" in line]
        if errors:
            raise DaresError(f"{node} could not load its model: {errors[-1].split(']: ')[-1]}")
        if proc.poll() is not None or "[FATAL]" in text:
            lines = text.splitlines() or [""]
            last = next((line for line in reversed(lines) if "FATAL" in line or "ERROR" in line), lines[-1])
            status = "" if proc.poll() is None else f" (status {proc.returncode})"
            raise DaresError(f"{node} exited{status}: {last.split(']: ')[-1]}")
        time.sleep(0.2)
    raise DaresError(f"{node} did not load its model within {timeout:.0f} s; log: {log}")


def publish_until_answered(proc: subprocess.Popen, log: Path, answered, publish, timeout: float = 180.0,
                           period: float = 0.5) -> int:
    """Call publish(i) every `period` s until answered() is true (the node has loaded its model and answers);
    returns how many were published. The node exiting or the timeout passing is a DaresError with its log."""
    deadline = time.monotonic() + timeout
    i = 0
    while not answered():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DaresError(f"the node produced no output; its log: {log.read_text()[-500:]}")
        publish(i)
        i += 1
        time.sleep(period)
    return i
