"""`dares bench train`: training throughput of the DARES two-step training step."""

from __future__ import annotations

from pathlib import Path

from ..commands.options import POSITIVE_INT
from ..names import ENCODERS, PRECISIONS
from . import Benchmark
from .results import result_name


def bench_train(encoder: str = "vits", height: int = 256, width: int = 320, batch: int = 12, device: str = "cpu",
                precision: str = "fp32", steps: int = 5, warmup: int = 1, workdir: Path | None = None,
                data: Path | None = None) -> dict:
    """Images/s of full DARES training steps (position step + depth/pose/transform step) on synthetic scenes, or
    on the frames of `data` (a `dares synth` / `dares prepare-scared` folder).

    The step is the official trainer's (same networks, losses and two optimisers), so ours is the reference
    style of step; the figure is the throughput a lab can expect, data loading excluded.
    """
    import tempfile
    import time

    from ..data.synthetic import SynthConfig, generate
    from ..inference import resolve_device
    from ..train import TrainConfig, Trainer
    from .results import machine, peak_memory_mb, summarize, synchronize

    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="dares-bench-train-", dir=workdir) as tmp:
        if data is None:
            data = generate(SynthConfig(width=width, height=height, frames=max(batch + 2, 5), sequences=1, seed=0),
                            Path(tmp) / "data")
        cfg = TrainConfig(data=str(data), out=str(Path(tmp) / "run"), height=height, width=width, batch_size=batch,
                          encoder=encoder, device=device, precision=precision, num_workers=0)
        cfg.validate()
        trainer = Trainer(cfg)
        loader, _ = trainer._loader(0)
        inputs = next(iter(loader))
        times = []
        for i in range(warmup + steps):
            synchronize(dev)
            start = time.perf_counter()
            trainer.train_step(inputs)
            synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    ours = summarize(times, batch)
    ours["peak_memory_mb"] = peak_memory_mb(dev)
    return {"benchmark": "train", "machine": machine(dev),
            "settings": {"encoder": encoder, "input": f"{height}x{width}", "batch": batch, "precision": precision,
                         "frames": "[0,-1,1]"},
            "paths": {"train step": ours},
            "note": "one step = position-net step + depth/pose/transform step, as the official trainer; throughput in "
                    "images/s"}


class TrainBenchmark(Benchmark):
    kind = "train"
    help = "training throughput (images/s) of the DARES two-step training step"
    timing = True
    gpu_target = "training"

    def add_arguments(self, p) -> None:
        p.add_argument("--encoder", default="vits", choices=ENCODERS, help="ViT size (random weights)")
        p.add_argument("--height", type=POSITIVE_INT, default=256, help="training height (default 256)")
        p.add_argument("--width", type=POSITIVE_INT, default=320, help="training width (default 320)")
        p.add_argument("--batch", type=POSITIVE_INT, default=12, help="batch size (official 12)")
        p.add_argument("--device", default="cpu", help="cpu or cuda")
        p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="training precision")
        p.add_argument("--steps", type=POSITIVE_INT, default=5, help="measured steps (default 5)")
        p.add_argument("--data", type=Path, default=None,
                       help="train on this data folder (`dares synth` / `dares prepare-scared` layout) instead of a "
                            "generated scene")

    def measure(self, args) -> dict:
        return bench_train(args.encoder, args.height, args.width, args.batch, args.device, args.precision, args.steps,
                           data=args.data)

    def name(self, args, record: dict) -> str:
        return result_name(record, "encoder", "input", "batch", "precision")

    def report(self, record: dict, path) -> str:
        step = record["paths"]["train step"]
        return (f"training: {step['throughput_fps']} images/s ({step['median_ms']} ms per step of "
                f"{record['settings']['batch']}); wrote {path}")


BENCHMARK = TrainBenchmark()
