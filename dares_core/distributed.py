"""Data parallel over torch.distributed that reproduces the single-process run: batch-norm statistics and
masked means are taken over the global batch, so N processes with batch B/N give the losses of one with B.

On CUDA the trainer uses torch's SyncBatchNorm; it has no CPU kernel, so CPU (gloo) runs use
GlobalBatchNorm2d here, written by hand for that reason alone.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """x summed over processes (x itself in a single process); the backward sums gradients over processes,
    so each process's inputs get the gradient of the sum of every process's loss."""
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x)


def batch_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of x (B,...) over the global batch, differentiable; x.mean() in a single process."""
    if not is_distributed():
        return x.mean()
    sums = all_reduce_sum(torch.stack([x.sum(), x.new_tensor(float(x.numel()))]))
    return sums[0] / sums[1]


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (two passes: mean, then variance).

    Same parameters, buffers and state-dict keys as nn.BatchNorm2d; identical to it in eval mode or in a
    single process.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        channels = x.shape[1]
        local_count = x.new_tensor([x.numel() // channels])
        sums = all_reduce_sum(torch.cat([x.sum((0, 2, 3)), local_count]))
        count = sums[-1]
        mean = sums[:channels] / count
        centred = x - mean[None, :, None, None]
        var = all_reduce_sum((centred * centred).sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1), momentum)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def global_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every BatchNorm2d computing global-batch statistics: SyncBatchNorm on CUDA,
    GlobalBatchNorm2d elsewhere; weights and running statistics are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            bn = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(module, name, bn)
        else:
            global_batchnorm(child, device)
    return module
