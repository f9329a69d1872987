"""Where a run computes: the device, DistributedDataParallel processes, deterministic kernels.

**DDP.** Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1) every process trains on its
share of each epoch (``DistributedSampler``) in a ``DistributedDataParallel`` model (backend
``gloo`` on CPU, ``nccl`` on GPU). Rank 0 alone scores validation data, predicts the test fold,
writes every file and broadcasts its decisions (improved? stop?) to the others. In a single
process :class:`Dist`'s collectives are no-ops.

**Determinism.** On CPU the run is bitwise reproducible for a given seed, torch version and
thread count (``torch.use_deterministic_algorithms(True)``). On GPU, cuDNN is put in
deterministic mode (``cudnn.deterministic``, no benchmark, ``CUBLAS_WORKSPACE_CONFIG``), but
``use_deterministic_algorithms`` only warns: the backward of adaptive average pooling (ResNet's
GAP) uses atomic adds on CUDA and has no deterministic kernel, and NCCL all-reduce order under
DDP adds floating-point noise, so GPU runs agree only approximately. Results also differ between
single-process and DDP runs (different batch composition per step).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import TrainingError


@dataclass
class Dist:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that evaluates, decides and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank."""
        if not self.active:
            return values
        t = self._tensor(values)
        dist.broadcast(t, src=0)
        return t.cpu().tolist()

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over all ranks."""
        if not self.active:
            return values
        t = self._tensor(values)
        dist.all_reduce(t)
        return t.cpu().tolist()

    @staticmethod
    def _tensor(values: list[float]) -> torch.Tensor:
        t = torch.tensor(values, dtype=torch.float64)
        return t.cuda() if dist.get_backend() == "nccl" else t  # NCCL reduces GPU tensors only


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``; a clear error otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA GPU is available to torch here")
    if device not in ("cpu", "cuda"):
        raise TrainingError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


@contextmanager
def distributed_processes(device: torch.device) -> Iterator[tuple[Dist, torch.device]]:
    """(this process's Dist, its device) for the duration of a run.

    Reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and joins (or
    creates, and at the end destroys) the process group; a single process gets ``Dist()`` and
    the device unchanged.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Dist(), device
        return
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:  # share the cores between the processes on this machine
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Dist(rank, world, local), device
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def set_determinism(device: torch.device) -> None:
    """Bitwise-reproducible kernels on CPU; as reproducible as CUDA allows on GPU."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True)
