"""`dares bench pose`: the pose network alone (the odometry node's whole network cost, and `dares infer
--temporal`'s), on torch as the official evaluate_pose.py runs it against our backend, interleaved."""

from __future__ import annotations

from pathlib import Path

from ..commands.options import IMAGE_SIDE, POSITIVE_INT, add_backend_options, backend_options
from . import Benchmark
from .results import backend_suffix, result_name


def bench_pose(height: int = 256, width: int = 320, device: str = "cpu", rounds: int = 10, calls: int = 5,
               weights: Path | None = None, backend: str = "onnxruntime", providers: tuple = ()) -> dict:
    """The pose network (official ResNet-18 layout, random weights unless `weights`) on a (1,6,H,W) pair: eager
    torch (the reference) and PoseRunner on `backend` after its check; returns the record with the speedup and the
    largest |difference| of the 4x4 relative pose to the reference's."""

    import torch

    from ..inference import resolve_device
    from ..model.pose_net import PoseDecoder, ResnetEncoder
    from ..pose import PoseNet, PoseRunner, load_pose_net, poses_of_pairs
    from .results import interleaved, machine, synchronize

    dev = resolve_device(device)
    torch.manual_seed(0)
    if weights is not None:
        net = load_pose_net(weights)
    else:
        encoder = ResnetEncoder(2)
        net = PoseNet(encoder, PoseDecoder(encoder.num_ch_enc)).eval()
    net = net.to(dev)
    ours = PoseRunner(net, (height, width), dev, backend, providers)
    pairs = torch.rand(1, 6, height, width, generator=torch.Generator().manual_seed(1)).to(dev)

    def run_reference():
        poses = poses_of_pairs(net, pairs)
        synchronize(dev)
        return poses

    runs = {"reference": run_reference, f"ours {ours.backend}": lambda: ours(pairs)}
    expected = run_reference()
    paths = interleaved(runs, rounds, calls, 1)
    label = f"ours {ours.backend}"
    paths[label].update(speedup=round(paths["reference"]["median_ms"] / paths[label]["median_ms"], 2),
                        max_abs_diff_pose=float(abs(ours(pairs) - expected).max()))
    return {
        "benchmark": "pose", "machine": machine(dev),
        "settings": {"input": f"{height}x{width}", "batch": 1, "precision": "fp32",
                     "torch_threads": torch.get_num_threads(), "backend": backend},
        "paths": paths, "speedup": paths[label]["speedup"],
        "note": "reference: the pose encoder and decoder in eager torch, as evaluate_pose.py; ours: PoseRunner "
                "(the odometry node's) on the backend, after its check against torch",
    }


class PoseBenchmark(Benchmark):
    kind = "pose"
    help = "the pose network alone: torch as the official code runs it vs our backend"
    timing = True

    def add_arguments(self, p) -> None:
        p.add_argument("--weights", type=Path, default=None,
                       help="benchmark these pose weights (as the odometry node takes them) instead of random ones")
        p.add_argument("--height", type=IMAGE_SIDE, default=256, help="input height (default 256, the official)")
        p.add_argument("--width", type=IMAGE_SIDE, default=320, help="input width (default 320, the official)")
        p.add_argument("--device", default="cpu", help="cpu or cuda")
        p.add_argument("--rounds", type=POSITIVE_INT, default=10, help="interleaved rounds (default 10)")
        p.add_argument("--calls", type=POSITIVE_INT, default=5, help="calls per path per round (default 5)")
        add_backend_options(p, default="onnxruntime")

    def measure(self, args) -> dict:
        return bench_pose(args.height, args.width, args.device, args.rounds, args.calls, args.weights,
                          **backend_options(args))

    def name(self, args, record: dict) -> str:
        return result_name(record, "input") + backend_suffix(record)

    def report(self, record: dict, path) -> str:
        return f"reference {record['paths']['reference']['median_ms']} ms; " + "; ".join(
            f"{label} {m['median_ms']} ms ({m['speedup']}x, max |pose diff| {m['max_abs_diff_pose']:.1e})"
            for label, m in record["paths"].items() if label != "reference") + f"; wrote {path}"


BENCHMARK = PoseBenchmark()
