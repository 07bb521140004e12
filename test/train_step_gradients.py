"""Run two training steps and save what data parallelism must reproduce: the losses of both steps and the
all-reduced gradients of the first (before the optimizer moves anything). Started by test_train.py as one
process and under torchrun with two; rank 0 writes OUT.pt.

Everything runs in float64. In float32 the gradient of the pose encoder is ill-conditioned (BatchNorm
backward over a 2-image batch cancels almost all of it): summation order alone, which differs between one
process and two and between CPUs, moves it by up to 1 %. In float64 rounding is 1e-16 and any difference that
remains is the method's.

usage: python train_step_gradients.py CONFIG.yaml OUT.pt
"""

import os
import sys

import torch
import torch.distributed as dist

from dares_core.train import TrainConfig, Trainer


def main(config: str, out: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    torch.set_default_dtype(torch.float64)
    trainer = Trainer(TrainConfig.from_sources(config, {}))
    loader, _ = trainer._loader(0)
    batches = ({k: v.double() if v.is_floating_point() else v for k, v in batch.items()} for batch in loader)
    first = trainer.train_step(next(batches))
    # each phase's backward leaves its all-reduced gradients in .grad until that phase's next zero_grad
    gradients = {f"{name}/{key}": p.grad.detach().clone() for name, model in trainer.models.items()
                 for key, p in model.named_parameters() if p.grad is not None}
    second = trainer.train_step(next(batches))
    if trainer.rank == 0:
        torch.save({"losses": [[first["loss"], first["loss_position"]], [second["loss"], second["loss_position"]]],
                    "gradients": gradients}, out)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
