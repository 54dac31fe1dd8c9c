"""Multi-process training under torchrun: process-group set-up, and the few collective
operations the training loop needs. With one process everything here is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # False when the group was already there (a --search joins it once for all its trials):
    # then shutdown() leaves it for its owner to close.
    owns_group: bool = True

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes outputs, logs and training state."""
        return self.rank == 0


def init_distributed(device_request: str) -> DistributedContext:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_request != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistributedContext(dist.get_rank(), world_size, local_rank, owns_group)


def shutdown(context: DistributedContext) -> None:
    if context.enabled:
        import torch.distributed as dist

        dist.barrier()
        if context.owns_group:
            dist.destroy_process_group()


def sum_across(context: DistributedContext, *values: float) -> list[float]:
    if not context.enabled:
        return list(values)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def any_across(context: DistributedContext, flag: bool) -> bool:
    """True on every process if it is true on any: all stop at the same step, none hangs."""
    return sum_across(context, float(flag))[0] > 0 if context.enabled else flag


def gather_arrays(context: DistributedContext, array: np.ndarray) -> np.ndarray:
    if not context.enabled:
        return array
    import torch.distributed as dist

    parts: list = [None] * context.world_size
    dist.all_gather_object(parts, array)
    filled = [part for part in parts if len(part)]  # an empty part may lack the others' width
    return np.concatenate(filled) if filled else array


def from_main(context: DistributedContext, value):
    """The main process's `value`, on every process (a picklable object: a decision, options)."""
    if not context.enabled:
        return value
    import torch.distributed as dist

    holder = [value if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        import torch.distributed as dist

        dist.barrier()
