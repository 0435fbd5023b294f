"""torchrun / DDP helpers shared by pretraining and finetuning.

``init_distributed`` reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK)
and falls back to one process when they are absent, so every script runs the same way
with ``python script.py`` and with ``torchrun --nproc_per_node=G --nnodes=N script.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


def init_distributed(device: str | None = None) -> torch.device:
    """Join the process group torchrun describes (if any) and return this process's device.

    ``device`` is "cuda", "cpu" or None (CUDA when available). Backend: NCCL for CUDA,
    gloo otherwise. Each process uses the GPU of its LOCAL_RANK.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")

    if device == "cuda":
        torch.cuda.set_device(local_rank())
        chosen = torch.device("cuda", local_rank())
    else:
        chosen = torch.device("cpu")

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        # env:// reads MASTER_ADDR/MASTER_PORT, which torchrun sets.
        if device == "cuda":
            dist.init_process_group(backend=backend, init_method="env://", device_id=chosen)
        else:
            dist.init_process_group(backend=backend, init_method="env://")
    return chosen


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its node (its GPU number); 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """True on the process that logs and writes files (rank 0)."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; a no-op in a single process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over all processes, in place; a no-op in a single process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of a script)."""
    if is_distributed():
        dist.destroy_process_group()


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can start an epoch part-way through.

    After resuming from a mid-epoch checkpoint, ``set_epoch(epoch, skip_batches=k,
    batch_size=b)`` drops the first k*b indices of this rank's shard, so the epoch
    continues with the batches that had not been seen, without loading the skipped ones.
    Works without a process group: rank and world size come from this module.
    """

    def __init__(self, dataset: Dataset, shuffle: bool = True, seed: int = 0, drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.skip = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0, batch_size: int = 1) -> None:
        super().set_epoch(epoch)
        self.skip = min(skip_batches * batch_size, self.num_samples)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip
