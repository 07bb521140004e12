"""`dares bench model`: the depth network alone, our deployment path against the official-style path."""

from __future__ import annotations

from pathlib import Path

from ..commands.options import IMAGE_SIDE, POSITIVE_INT, add_backend_options, backend_options
from ..names import ENCODERS, PRECISIONS
from . import Benchmark
from .results import backend_suffix, result_name


def bench_model(encoder: str = "vits", height: int | None = None, width: int | None = None, batch: int = 1,
                device: str = "cpu",
                precision: str = "fp32", rounds: int = 10, calls: int = 5, weights: Path | None = None,
                compile: bool = False, backend: str = "torch", providers: tuple = ()) -> dict:
    """Our deployment path (with `compile` the compiled one too; with backend onnxruntime ONNX Runtime's on the
    first of `providers` there is, as DepthPredictor runs it after its check) vs the reference path on the same
    network and input; returns the record with each path's speedup and max |disparity difference| to the
    reference."""
    import copy
    import time

    import torch

    from ..geometry import sigmoid_to_depth
    from ..inference import DepthPredictor, network_input_size, resolve_device
    from ..model.depth_net import DaresDepthNet, DepthNetConfig
    from ..model.weights import load_depth_net
    from .results import interleaved, machine, peak_memory_mb, synchronize

    dev = resolve_device(device)
    torch.manual_seed(0)
    if weights is not None:
        net = load_depth_net(weights, mode="dares")
    else:
        net = DaresDepthNet(DepthNetConfig.dares(encoder))
        with torch.no_grad():  # trained-looking adapters, so merging is not a no-op
            for name, p in net.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
    net.eval()
    height, width = network_input_size(net, (height, width))
    reference = copy.deepcopy(net).to(dev)
    predictors = {"ours": DepthPredictor(copy.deepcopy(net), (height, width), dev, precision)}
    if compile:
        start = time.perf_counter()
        predictors["ours compiled"] = DepthPredictor(copy.deepcopy(net), (height, width), dev, precision, compile=True)
        compile_s = round(time.perf_counter() - start, 1)
    if backend == "onnxruntime":
        onnx = DepthPredictor(copy.deepcopy(net), (height, width), dev, precision, batch_size=batch,
                              backend="onnxruntime", providers=providers)
        predictors[f"ours {onnx.backend}"] = onnx  # "ours torch" where the check refused it
    images = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8)
    floats = images.permute(0, 3, 1, 2).float().div(255).to(dev)

    def run_reference():
        with torch.no_grad():
            out = reference(floats, scales=(0, 1, 2, 3))
            disparity, depth = sigmoid_to_depth(out[0], 0.1, 150.0)
        synchronize(dev)
        return disparity[:, 0]

    def runner(predictor):
        def run():
            pred = predictor.predict(images)
            synchronize(dev)
            return pred.disparity
        return run

    runs = {"reference": run_reference, **{label: runner(p) for label, p in predictors.items()}}
    expected = run_reference().float()
    agreement = {}
    for label in predictors:
        disparity = runs[label]().float()
        relative = (expected / disparity - 1).abs().flatten().cpu()  # relative depth error: depth = unit / disparity
        agreement[label] = {"max_abs_diff_disparity": float((disparity - expected).abs().max()),
                            "depth_relative_p99": float(relative.quantile(0.99)),
                            "depth_relative_max": float(relative.max())}
    paths = interleaved(runs, rounds, calls, batch)
    for label in predictors:
        paths[label].update(speedup=round(paths["reference"]["median_ms"] / paths[label]["median_ms"], 2),
                            **agreement[label])
    paths["ours"]["peak_memory_mb"] = peak_memory_mb(dev)
    if compile:
        paths["ours compiled"]["compile_s"] = compile_s
    return {
        "benchmark": "model", "machine": machine(dev),
        "settings": {"encoder": encoder if weights is None else net.config.encoder, "input": f"{height}x{width}",
                     "batch": batch, "precision": precision, "torch_threads": torch.get_num_threads(),
                     "compile": compile, **({"backend": backend} if backend != "torch" else {})},
        "paths": paths, "speedup": max(paths[label]["speedup"] for label in predictors),
        "note": "reference: unmerged LoRA, 4 heads, eager fp32; ours: DepthPredictor (merged, 1 head, "
                "inference_mode, channels-last, uint8 in, depth out); compiled: the same through torch.compile "
                "(inductor: frozen weights, max-autotune, CUDA graphs on GPU)",
    }


class ModelBenchmark(Benchmark):
    kind = "model"
    help = "the depth network alone: our deployment path vs the official-style path"
    timing = True
    gpu_target = "model at 256x320 fp16"

    def add_arguments(self, p) -> None:
        p.add_argument("--encoder", default="vits", choices=ENCODERS, help="ViT size (random weights)")
        p.add_argument("--weights", type=Path, default=None, help="benchmark this checkpoint instead of random weights")
        p.add_argument("--height", type=IMAGE_SIDE, default=None,
                       help="network input height (default: the size the checkpoint was trained at, else 256)")
        p.add_argument("--width", type=IMAGE_SIDE, default=None,
                       help="network input width (default: the size the checkpoint was trained at, else 320)")
        p.add_argument("--batch", type=POSITIVE_INT, default=1, help="frames per call (default 1)")
        p.add_argument("--device", default="cpu", help="cpu or cuda")
        p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="our path's precision")
        p.add_argument("--rounds", type=POSITIVE_INT, default=10, help="interleaved rounds (default 10)")
        p.add_argument("--calls", type=POSITIVE_INT, default=5, help="calls per path per round (default 5)")
        p.add_argument("--compile", action="store_true", help="also measure our path through torch.compile")
        add_backend_options(p)

    def measure(self, args) -> dict:
        return bench_model(args.encoder, args.height, args.width, args.batch, args.device, args.precision,
                           args.rounds, args.calls, args.weights, args.compile, **backend_options(args))

    def name(self, args, record: dict) -> str:
        return result_name(record, "encoder", "input", "batch", "precision") + backend_suffix(record)

    def report(self, record: dict, path) -> str:
        return f"reference {record['paths']['reference']['median_ms']} ms; " + "; ".join(
            f"{label} {m['median_ms']} ms ({m['throughput_fps']} fps, {m['speedup']}x, max |disparity diff| "
            f"{m['max_abs_diff_disparity']:.2e})" for label, m in record["paths"].items() if label != "reference") \
            + f"; wrote {path}"


BENCHMARK = ModelBenchmark()
