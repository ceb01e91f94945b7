"""Process-group set-up for DDP under ``torchrun`` (or a single process).

``torchrun --nproc_per_node N -m asr_kd.bin.train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
``setup_distributed`` reads them and initialises the default process group
with ``gloo`` on CPU and ``nccl`` on CUDA (one GPU per process, chosen by
``LOCAL_RANK``).  Without those variables (or ``WORLD_SIZE == 1``) nothing
is initialised and every helper here degrades to the single-process case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "setup_distributed",
    "cleanup_distributed",
    "is_distributed",
    "all_reduce_sum",
    "all_gather_objects",
    "barrier",
    "resolve_device",
]


@dataclass
class DistInfo:
    """rank, world_size, local_rank, the device this process trains on, backend (None: single)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str]

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> cuda:<local_rank> when CUDA is available, else cpu; ``"cpu"``; ``"cuda"``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but CUDA is not available")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(name)
    raise ValueError(f"--device {name!r} is unknown (auto, cpu, cuda, cuda:N)")


def setup_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the process group from torchrun's environment (if any).

    Args:
      device: "auto" | "cpu" | "cuda" (see ``resolve_device``).
      timeout_s: collective timeout.

    Returns:
      DistInfo; ``backend`` is None in the single-process case.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, None)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(
            backend=backend, init_method="env://", rank=rank, world_size=world,
            timeout=timedelta(seconds=timeout_s), **kwargs,
        )
    return DistInfo(rank, world, local_rank, dev, backend)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place SUM all-reduce across ranks (identity when not distributed); returns ``t``."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()
