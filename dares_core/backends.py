"""Where the depth network runs: torch (the default) or ONNX Runtime on the exported graph, with its execution
providers tried in order (TensorRT, CUDA, CPU), and the check at start that a backend's output is the network's.

The ONNX graph is exported once and cached (DARES_CACHE, else $XDG_CACHE_HOME/dares, else ~/.cache/dares), keyed
by the weights' hash, the input size, the batch and the precision; a cached graph that cannot be read is exported
again, with one line saying so. TensorRT keeps its engines in the same cache. What peers' users ask for after a
TensorRT upgrade is a check of the engine against the framework: `backend_difference` runs a probe image through
both, and DepthPredictor refuses a backend whose output is further from torch's than the tolerance."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from .errors import DaresError

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}  # our names of ONNX Runtime's execution providers
DEFAULT_PROVIDERS = ("tensorrt", "cuda", "cpu")  # tried in this order; the first this install has runs
CHECK_TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2}  # the largest relative disparity difference to torch accepted
OPSET = 17


def cache_dir() -> Path:
    """The folder of cached graphs and engines."""
    base = os.environ.get("DARES_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dares"
    return Path(base)


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


def graph_key(net, size: tuple[int, int], batch: int, precision: str) -> str:
    """The cache key of a network's graph: its weights' hash, the input size, the batch and the precision (and the
    opset and torch version that wrote it)."""
    digest = hashlib.sha256()
    for name, value in net.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(f"{size}|{batch}|{precision}|{OPSET}|{torch.__version__}".encode())
    return digest.hexdigest()[:24]


def write_onnx(net, path: Path, height: int, width: int, opset: int = OPSET) -> None:
    """The merged network's full-resolution head as ONNX at `path`: images (B,3,H,W) in [0,1] -> disparity
    (B,1,H,W), the batch dynamic. The one exporter of `dares export` and the cache."""
    import warnings

    from .export import FullResolution

    module = FullResolution(net).eval()
    example = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))  # at 1 the batch would
    # be specialised to 1
    example = example.to(next(net.parameters()).device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the tracer's notes on shape checks: not ours
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=["disparity"],
                          dynamic_axes={"images": {0: "batch"}, "disparity": {0: "batch"}}, opset_version=opset,
                          dynamo=False)


class OnnxRuntimeNetwork:
    """A merged DaresDepthNet as an ONNX Runtime session: __call__(x (B,3,h,w) float [0,1], any device) -> the
    full-resolution head's output (B,1,h,w) float32 on x's device, as DepthPredictor's torch network. providers: our
    names, tried in order (a missing one is named through say, and the next tried); precision fp16 runs on TensorRT
    alone (its fp16 mode): the other providers compute this graph in fp32, which is refused rather than mislabelled.
    `provider` is the one that runs."""

    def __init__(self, net, size: tuple[int, int], batch: int, precision: str,
                 providers: tuple[str, ...] = DEFAULT_PROVIDERS, say=print):
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
        folder = cache_dir() / "onnx"
        self.path = folder / f"{graph_key(net, size, batch, precision)}.onnx"
        options = {"tensorrt": {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir() / "trt"),
                                "trt_fp16_enable": precision == "fp16"}}
        self._providers = [(PROVIDERS[n], options.get(n, {})) for n in chosen]
        self._size, self._net = size, net
        if not self.path.is_file():
            self._export(say)
        try:
            self.session = self._session(ort)
        except Exception as e:  # a torn or foreign file where the cache expects ours
            say(f"the cached ONNX graph {self.path} is unreadable ({type(e).__name__}): exported again")
            self._export(say)
            self.session = self._session(ort)
        self.provider = self.session.get_providers()[0]
        self._net = None  # the session holds what it needs

    def _export(self, say) -> None:
        from .files import atomic_file

        with atomic_file(self.path) as tmp:
            write_onnx(self._net, tmp, *self._size)
        say(f"exported the network to ONNX once for onnxruntime: {self.path}")

    def _session(self, ort):
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are not the user's
        return ort.InferenceSession(str(self.path), options, providers=self._providers)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"images": np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
        return torch.from_numpy(out).to(x.device)


def backend_difference(reference, candidate, size: tuple[int, int], device: torch.device) -> float:
    """The largest relative difference between two networks' outputs (B,1,h,w) (the sigmoid, disparity's shape) on
    a probe image: a smooth gradient with texture, as endoscopy is, of the input size, in [0,1]."""
    height, width = size
    v, u = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    texture = 0.5 + 0.25 * torch.sin(u * 37.0) * torch.cos(v * 23.0)
    probe = torch.stack([0.6 * (1 - v) + 0.2, texture, 0.3 + 0.4 * u]).clamp(0, 1)[None].to(device)
    with torch.inference_mode():
        expected = reference(probe).float()
        got = candidate(probe).float()
    return float(((got - expected).abs() / expected.abs().clamp_min(1e-6)).max())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo's flags; elsewhere it is
    emulated, slower than fp32. True where the flags cannot be read (not Linux): nothing to warn of then."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags
