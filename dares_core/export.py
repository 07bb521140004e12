"""`dares export`: deployment artifacts of a depth network, LoRA merged, full-resolution head only; and of the
pose networks (one safetensors file that the odometry node and `dares pose` load).

Formats: onnx (checked against PyTorch with onnxruntime when installed), pt2 (torch.export program),
safetensors (merged weights that load without peft). The exported graph takes images (B,3,H,W) in [0,1]
(ImageNet normalisation inside for zero-shot DAv2) and returns the network disparity (B,1,H,W): the
sigmoid output for DARES (scaled disparity = 1/max + (1/min - 1/max) * output), relative for DAv2.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .backends import depth_graph, write_onnx
from .errors import DaresError
from .files import atomic_file, ensure_writable_output
from .inference import network_input_size
from .model.depth_net import DaresDepthNet
from .model.weights import load_depth_net, save_depth_net
from .names import EXPORT_FORMATS


class FullResolution(torch.nn.Module):
    """images (B,3,H,W) in [0,1] -> disparity (B,1,H,W): only the scale-0 head."""

    def __init__(self, net: DaresDepthNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images, scales=(0,))[0]


ONNX_OPSETS = (14, 20)  # scaled_dot_product_attention needs 14; the TorchScript exporter writes up to 20


def export_pose(weights: Path, out: Path, force: bool = False) -> dict:
    """The pose encoder and decoder of `weights` (run folder, checkpoint, official folder) as one safetensors."""
    from .pose import load_pose_net, pose_units, save_pose_net

    ensure_writable_output(Path(out), force, one_file=True)
    save_pose_net(load_pose_net(weights), out, pose_units(weights))
    return {"format": "safetensors", "path": str(out)}


def export(weights: Path, out: Path, fmt: str, height: int | None = None, width: int | None = None,
           base_weights: Path | None = None, force: bool = False, opset: int = 17) -> dict:
    """Write the artifact atomically; returns {"format", "path", "max_abs_diff" (onnx, when checked)}."""
    if fmt not in EXPORT_FORMATS:
        raise DaresError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "onnx" and not ONNX_OPSETS[0] <= opset <= ONNX_OPSETS[1]:
        raise DaresError(f"--opset {opset}: give {ONNX_OPSETS[0]} to {ONNX_OPSETS[1]} (the network's attention needs "
                         f"{ONNX_OPSETS[0]}; torch's ONNX exporter writes up to {ONNX_OPSETS[1]})")
    ensure_writable_output(Path(out), force, one_file=True)
    net = load_depth_net(weights, base_weights=base_weights).merge_lora().eval()
    result = {"format": fmt, "path": str(out)}
    if fmt == "safetensors":
        save_depth_net(net, out)
        return result
    height, width = network_input_size(net, (height, width))
    graph = depth_graph(net, height, width)
    with atomic_file(Path(out)) as tmp:
        if fmt == "onnx":
            write_onnx(graph, tmp, opset)
            _name_output_dims(tmp, height, width)
            result["max_abs_diff"] = _check_onnx(tmp, graph.module, graph.example)
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.export.export(graph.module, (graph.example,), dynamic_shapes={"images": {0: batch}})
            torch.export.save(program, str(tmp))
    return result


def _name_output_dims(path: Path, height: int, width: int) -> None:
    """The traced graph loses the output's static sizes (shape inference names them after other dims): state
    them, (batch, 1, H, W), as the input's are."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[1:], (1, height, width)):
        dim.Clear()
        dim.dim_value = value
    dims[0].Clear()
    dims[0].dim_param = "batch"
    onnx.save(model, str(path))


def _check_onnx(path: Path, module: torch.nn.Module, example: torch.Tensor) -> float | None:
    """Max |onnxruntime - PyTorch| on a batch of two, or None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    batch = torch.cat([example, example.flip(-1)])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": batch.numpy()})[0]
    with torch.no_grad():
        expected = module(batch).numpy()
    diff = float(abs(got - expected).max())
    if diff > 1e-4:
        raise DaresError(f"ONNX output differs from PyTorch by {diff:.2e} (> 1e-4): try another --opset")
    return diff
