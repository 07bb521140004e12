"""Where the networks run: torch (the default) or ONNX Runtime on the exported graph, with its execution
providers tried in order (TensorRT, CUDA, CPU), and the check at start that a backend's output is the network's.

The ONNX graph is exported once and cached (DARES_CACHE, else $XDG_CACHE_HOME/dares, else ~/.cache/dares), keyed
by the weights' hash, the input size, the batch and the precision; a cached graph that cannot be read is exported
again, with one line saying so. TensorRT keeps its engines in the same cache. What peers' users ask for after a
TensorRT upgrade is a check of the engine against the framework: `checked_onnxruntime` runs a probe image through
both, and refuses a backend whose output is further from torch's than the tolerance. The depth network
(DepthPredictor) and the pose network (pose.PoseRunner) both run here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DaresError
from .files import cache_dir

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}  # our names of ONNX Runtime's execution providers
DEFAULT_PROVIDERS = ("tensorrt", "cuda", "cpu")  # tried in this order; the first this install has runs
CHECK_TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2}  # the largest relative disparity difference to torch accepted
OPSET = 17


def providers_named(text: str) -> bool:
    """Whether `text` names providers as parse_providers takes them."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return bool(names) and all(n in PROVIDERS for n in names)


def parse_providers(text: str) -> tuple[str, ...]:
    """"tensorrt,cuda,cpu" -> ("tensorrt", "cuda", "cpu"), checked: one line naming an unknown one."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not providers_named(text):
        raise DaresError(f"onnx providers {text!r}: give some of {', '.join(PROVIDERS)}, comma-separated, in the "
                         "order to try them")
    return names


@dataclass(frozen=True)
class Graph:
    """What goes to ONNX: `module` on inputs shaped as `example` (its first dimension, the batch, left dynamic; 2,
    as tracing at 1 would specialise it), named `inputs` and `outputs`."""

    module: torch.nn.Module
    example: torch.Tensor
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def depth_graph(net, height: int, width: int) -> Graph:
    """A merged DaresDepthNet's full-resolution head: images (B,3,H,W) in [0,1] -> disparity (B,1,H,W)."""
    from .export import FullResolution

    example = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    return Graph(FullResolution(net).eval(), example.to(next(net.parameters()).device), ("images",), ("disparity",))


def graph_key(graph: Graph, batch: int, precision: str) -> str:
    """The cache key of a graph: its module's weights' hash, the input size, the batch and the precision (and the
    opset and torch version that wrote it)."""
    digest = hashlib.sha256()
    for name, value in graph.module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(f"{tuple(graph.example.shape[1:])}|{batch}|{precision}|{OPSET}|{torch.__version__}".encode())
    return digest.hexdigest()[:24]


def write_onnx(graph: Graph, path: Path, opset: int = OPSET) -> None:
    """`graph` as ONNX at `path`, the batch dynamic: the one exporter of `dares export` and the cache."""
    import warnings

    dynamic = {name: {0: "batch"} for name in (*graph.inputs, *graph.outputs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the tracer's notes on shape checks: not ours
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: dynamo's cannot trace peft
        torch.onnx.export(graph.module, (graph.example,), str(path), input_names=list(graph.inputs),
                          output_names=list(graph.outputs), dynamic_axes=dynamic, opset_version=opset, dynamo=False)


class OnnxRuntimeNetwork:
    """A Graph as an ONNX Runtime session: __call__(x, any device) -> the module's output (a tensor, or a tuple of
    them for several outputs), float32 on x's device, as the torch module gives it. providers: our names, tried in
    order (a missing one is named through say, and the next tried); precision fp16 runs on TensorRT alone (its fp16
    mode): the other providers compute the graph in fp32, which is refused rather than mislabelled. `provider` is
    the one that runs."""

    def __init__(self, graph: Graph, batch: int, precision: str, providers: tuple[str, ...] = DEFAULT_PROVIDERS,
                 say=print):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DaresError("backend onnxruntime: onnxruntime is not installed (pip install dares_ros[export])") \
                from None
        available = ort.get_available_providers()
        chosen = []
        for name in providers:
            if PROVIDERS[name] in available:
                chosen.append(name)
            else:
                say(f"onnxruntime: the {name} provider ({PROVIDERS[name]}) is not in this install; trying the next")
        if not chosen:
            raise DaresError(f"onnxruntime has none of the providers {', '.join(providers)} here (it has "
                             f"{', '.join(available)}): add cpu to the providers")
        if precision != "fp32" and chosen[0] != "tensorrt":
            raise DaresError(f"onnxruntime's {chosen[0]} provider computes the graph in fp32, not {precision}: use "
                             "precision fp32 with it, or the torch backend")
        self.path = cache_dir() / "onnx" / f"{graph_key(graph, batch, precision)}.onnx"
        options = {"tensorrt": {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir() / "trt"),
                                "trt_fp16_enable": precision == "fp16"}}
        self._providers = [(PROVIDERS[n], options.get(n, {})) for n in chosen]
        self._input = graph.inputs[0]
        if not self.path.is_file():
            self._export(graph, say)
        try:
            self.session = self._session(ort)
        except Exception as e:  # a torn or foreign file where the cache expects ours
            say(f"the cached ONNX graph {self.path} is unreadable ({type(e).__name__}): exported again")
            self._export(graph, say)
            self.session = self._session(ort)
        self.provider = self.session.get_providers()[0]

    def _export(self, graph: Graph, say) -> None:
        from .files import atomic_file

        with atomic_file(self.path) as tmp:
            write_onnx(graph, tmp)
        say(f"exported the network to ONNX once for onnxruntime: {self.path}")

    def _session(self, ort):
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are not the user's
        return ort.InferenceSession(str(self.path), options, providers=self._providers)

    def __call__(self, x: torch.Tensor):
        outputs = self.session.run(None, {self._input: np.ascontiguousarray(x.detach().float().cpu().numpy())})
        tensors = tuple(torch.from_numpy(out).to(x.device) for out in outputs)
        return tensors[0] if len(tensors) == 1 else tensors


def probe_image(size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(1,3,h,w) in [0,1]: a smooth gradient with texture, as endoscopy is."""
    height, width = size
    v, u = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    texture = 0.5 + 0.25 * torch.sin(u * 37.0) * torch.cos(v * 23.0)
    return torch.stack([0.6 * (1 - v) + 0.2, texture, 0.3 + 0.4 * u]).clamp(0, 1)[None].to(device)


def backend_difference(reference, candidate, probe: torch.Tensor) -> float:
    """The largest relative difference between two networks' outputs (a tensor or a tuple of them) on `probe`:
    |got - expected| / |expected|, the denominator held at least 1e-3 of the output's largest magnitude (a pose's
    near-zero components would otherwise make any rounding infinitely relative)."""
    with torch.inference_mode():
        expected, got = reference(probe), candidate(probe)
    pairs = zip(expected, got) if isinstance(expected, tuple) else [(expected, got)]
    worst = []
    for e, g in pairs:
        e, g = e.float(), g.float()
        floor = max(1e-3 * float(e.abs().max()), 1e-12)
        worst.append(float(((g - e).abs() / e.abs().clamp_min(floor)).max()))
    return float(np.max(worst))  # NaN, where any is, as a refusal


def checked_onnxruntime(graph: Graph, reference, probe: torch.Tensor, batch: int, precision: str,
                        providers: tuple[str, ...], check: bool, say):
    """(OnnxRuntimeNetwork of `graph`, its difference to `reference` on `probe` or None unchecked), or (None, the
    difference or None) where no session can be had or, with `check`, its output is further from the reference's
    than the tolerance: each said in one line ending "running on torch"."""
    try:
        network = OnnxRuntimeNetwork(graph, batch, precision, providers or DEFAULT_PROVIDERS, say)
    except DaresError as e:
        say(f"{e}; running on torch")
        return None, None
    name = f"onnxruntime {network.provider}"
    if not check:
        return network, None
    difference = backend_difference(reference, network, probe)
    tolerance = CHECK_TOLERANCE.get(precision, CHECK_TOLERANCE["fp16"])
    if not difference <= tolerance:  # NaN too
        say(f"{name} refused: on a probe image its output differs from torch's by {difference:.1e} relative "
            f"(tolerance {tolerance:.0e}); running on torch")
        return None, difference
    say(f"{name}: checked against torch on a probe image, largest relative difference {difference:.1e}")
    return network, difference


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo's flags; elsewhere it is
    emulated, slower than fp32. True where the flags cannot be read (not Linux): nothing to warn of then."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags
