"""The deployment path: images -> preprocess -> merged network -> disparity and depth, on one device."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .backends import cpu_has_native_bf16
from .errors import DaresError
from .geometry import sigmoid_to_depth
from .model.depth_net import DaresDepthNet
from .names import PRECISIONS
from .timing import untimed

PRECISION_DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.float16, torch.bfloat16)))
DEFAULT_INPUT_SIZE = (256, 320)  # (height, width): DARES's training size, for checkpoints that record none


def network_input_size(net: DaresDepthNet, requested=(None, None)) -> tuple[int, int]:
    """(height, width) the network runs at: each requested dimension that is given (not None or 0), else the
    size the checkpoint records (ours are trained at it), else DEFAULT_INPUT_SIZE."""
    recorded = net.config.input_size or DEFAULT_INPUT_SIZE
    return tuple(int(want or have) for want, have in zip(requested, recorded))


def resolve_device(name: str = "auto", fallback=None) -> torch.device:
    """The one device policy: `auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`. CUDA asked for and
    absent is an error, or with `fallback` (a function given the one-line warning, e.g. the node's logger) the
    CPU, so that a running node keeps running."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DaresError(f"unknown device {name!r}: give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        if fallback is None:
            raise DaresError(f"device {name!r} asked for but CUDA is not available here: pass --device cpu")
        fallback(f"device {name!r} asked for but CUDA is not available: running on cpu")
        return torch.device("cpu")
    return device


@dataclass
class Prediction:
    """disparity: (B,h,w) at network resolution (DARES: scaled disparity 1/depth in the network's own unit, as
    official eval saves it); depth: (B,H,W) at input resolution in mm (the network's unit times its recorded
    depth_unit_mm: nominal mm for DARES; NaN where invalid)."""

    disparity: torch.Tensor
    depth: torch.Tensor


def compile_options(device: torch.device) -> dict:
    """Inductor options of the compiled path: weights frozen into the graph (constant-folded, prepacked for
    oneDNN/MKL on CPU); on CPU autotuned kernels called from a C++ wrapper (no Python between them), on GPU
    CUDA graphs replay the kernels (no per-kernel launch cost). GPU matmuls are not autotuned: on an H200,
    autotuning took about 30 s per matmul shape (over 150 s for ViT-S, for a node starting up) and cuBLAS won
    every one (bench/gpu.sh, 2026-11-26)."""
    options = {"freezing": True, "max_autotune": device.type != "cuda"}
    if device.type == "cuda":
        options["triton.cudagraphs"] = True
    else:
        options["cpp_wrapper"] = True
    return options


class DepthPredictor:
    """Runs a depth network for deployment: LoRA merged, full-resolution head only, inference mode,
    channels-last memory (faster convolutions on CPU and GPU), fp16 or bf16 weights and activations (the network
    cast to that type, so a compiled graph computes in it too: not an autocast it could lose), and optionally
    `torch.compile` (compile_options; compiled here for `batch_size` images, another batch size compiles again).
    input_size: (height, width), either None for the checkpoint's own (network_input_size).

    backend: torch, or onnxruntime (dares_core.backends: the exported graph on the first of `providers` this install
    has; with `check`, refused for torch, with one line, where a probe image's output differs from torch's by more
    than the tolerance); `backend` then names what runs and `backend_check` the difference measured. say(line)
    hears what the user should know (a missing provider, the check, bf16 emulated on this CPU); default stderr.

    On CUDA, host images go through pinned memory and are copied asynchronously. stand_in replaces the network by
    a constant output of its shape (benchmarks: the cost of everything around the network, on any machine)."""

    def __init__(self, net: DaresDepthNet, input_size=(None, None), device="cpu", precision="fp32",
                 min_depth: float = 0.1, max_depth: float = 150.0, channels_last: bool = True, compile: bool = False,
                 batch_size: int = 1, stand_in: bool = False, backend: str = "torch", providers: tuple = (),
                 check: bool = True, say=None):
        if precision not in PRECISION_DTYPES:
            raise DaresError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.merge_lora().to(self.device, memory_format=self.memory_format).eval()
        if not 0 < min_depth < max_depth:
            raise DaresError(f"depth range {min_depth}..{max_depth}: give 0 < --min-depth < --max-depth (the trained "
                             "range, official 0.1..150)")
        self.size = network_input_size(net, input_size)
        if min(self.size) < 2 * net.patch_size:
            raise DaresError(f"network input {self.size[0]}x{self.size[1]} is too small: give a height and width of "
                             f"at least {2 * net.patch_size} pixels")
        self.dtype = PRECISION_DTYPES[precision]
        self.min_depth, self.max_depth = min_depth, max_depth
        say = say or (lambda line: print(line, file=sys.stderr))
        if self.dtype == torch.bfloat16 and self.device.type == "cpu" and not cpu_has_native_bf16():
            say("bf16 is emulated on this CPU (it has neither avx512_bf16 nor amx_bf16): slower than fp32 here; going "
                "on in bf16")
        self._network = self._stand_in if stand_in else self._run_network
        self.backend, self.backend_check = "torch", None
        if backend == "onnxruntime" and not stand_in:
            self._use_onnxruntime(batch_size, precision, providers, check, say)
        if self.backend == "torch" and self.dtype != torch.float32:  # onnxruntime keeps its own fp32 graph
            self.net = self.net.to(self.dtype)
        compile = compile and not stand_in and self.backend == "torch"
        self.compiled_batch = batch_size if compile else None  # smaller batches are padded to it: one compilation
        if compile:
            self._network = self._compiled(torch.compile(self._run_network, dynamic=False),
                                           compile_options(self.device))
            try:
                self.predict(torch.zeros((batch_size, *self.size, 3), dtype=torch.uint8))
            except Exception as e:  # inductor raises many types; the cause is nearly always the toolchain
                raise DaresError(f"torch.compile failed on {self.device} ({type(e).__name__}: {str(e)[:200]}): "
                                 "run without compile, or install a C++ compiler (CPU) / Triton (GPU)") from None

    def _use_onnxruntime(self, batch: int, precision: str, providers: tuple, check: bool, say) -> None:
        """Run the network on ONNX Runtime when its session can be had and, with `check`, agrees with torch."""
        from .backends import checked_onnxruntime, depth_graph, probe_image

        fp32 = lambda x: self.net(x, scales=(0,))[0].float()  # noqa: E731  (the reference: torch in fp32)
        network, self.backend_check = checked_onnxruntime(depth_graph(self.net, *self.size), fp32,
                                                          probe_image(self.size, self.device), batch, precision,
                                                          providers, check, say)
        if network is not None:
            self._network, self.backend = network, f"onnxruntime {network.provider}"

    @staticmethod
    def _compiled(compiled, options: dict):
        """Calls of `compiled` under inductor `options`, so every (re)compilation sees them: passed to
        torch.compile(options=...) freezing was not applied (measured on CPU: 109 ms instead of 91 ms)."""
        from torch._inductor import config

        def network(x: torch.Tensor) -> torch.Tensor:
            with config.patch(options):
                return compiled(x)
        return network

    @staticmethod
    def _stand_in(x: torch.Tensor) -> torch.Tensor:
        """The network's output shape (B,1,h,w), mid-range, at no cost."""
        return torch.full((x.shape[0], 1, *x.shape[-2:]), 0.5, device=x.device)

    def _run_network(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B,3,h,w) in [0,1] at the input size -> the full-resolution head's output (B,1,h,w) fp32, computed in
        the predictor's precision."""
        return self.net(x.to(self.dtype), scales=(0,))[0].float()

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, output_size: tuple[int, int] | None = None,
                stages=untimed) -> Prediction:
        """images: (B,H,W,3) uint8 RGB, any device; resized on the device (bilinear, antialiased) unless they are
        at the input size already (preprocess.network_batch makes them so as the official loader does).
        output_size: (H,W) of the depth, default the images' size; stages: a timing.Stages, which gets
        "preprocess", "network" and "postprocess"."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise DaresError(f"expected (B,H,W,3) uint8 RGB images, got {tuple(images.shape)} {images.dtype}")
        height, width = output_size or images.shape[1:3]
        count = len(images)
        with stages("preprocess"):
            if self.compiled_batch and count < self.compiled_batch:  # repeat the last image rather than recompile
                images = torch.cat([images, images[-1:].expand(self.compiled_batch - count, -1, -1, -1)])
            if self.device.type == "cuda" and images.device.type == "cpu":
                images = images.pin_memory()  # page-locked, so the copy below is asynchronous
            x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # a channels-last view
            if tuple(x.shape[-2:]) != self.size and x.device.type == "cpu":
                # antialiased in uint8 (torch's vectorised kernel), floats only at network size: a fraction of the work
                x = F.interpolate(x, self.size, mode="bilinear", align_corners=False, antialias=True)
            x = x.float().div_(255)
            if tuple(x.shape[-2:]) != self.size:
                x = F.interpolate(x, self.size, mode="bilinear", align_corners=False, antialias=True)
            x = x.contiguous(memory_format=self.memory_format)
        with stages("network"):
            out = self._network(x)
        with stages("postprocess"):
            if self.net.config.mode == "dares":
                disparity, _ = sigmoid_to_depth(out, self.min_depth, self.max_depth)
            else:
                disparity = out
            # as the SCARED protocol: resize disparity to the image, then invert
            full = disparity if (height, width) == self.size else F.interpolate(
                disparity, (height, width), mode="bilinear", align_corners=False)
            full = full[:, 0]
            unit = self.net.config.depth_unit_mm
            depth = full.reciprocal().mul_(unit).masked_fill_(full <= 0, float("nan"))  # in place: a fraction of
            # torch.where's cost (8 ms at 1280x1024 on 2 cores)
        return Prediction(disparity=disparity[:count, 0], depth=depth[:count])
