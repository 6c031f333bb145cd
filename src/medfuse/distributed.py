"""Several processes, one job: ``torch.distributed`` set up from the launcher's environment.

``torchrun --nproc-per-node N`` (and Hugging Face Accelerate's ``accelerate launch``, which wraps it)
starts one process per rank and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`init_from_env` joins the process group they describe: gloo on CPU, and gloo for
CPU tensors plus NCCL for CUDA tensors when the job runs on GPUs (each rank on ``cuda:LOCAL_RANK``).
Without those variables (or with ``WORLD_SIZE=1``) nothing is initialised and every helper here is a
no-op, so single-process runs are unchanged. A process group that the caller initialised itself (for
instance through ``accelerate.Accelerator``) is used as it is.

torch is imported lazily: these helpers look at ``torch.distributed`` only once it has been imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

SHARE_CHUNK_BYTES = 64 * 2**20  # largest message :func:`share_rows` sends at once


def _dist():
    """``torch.distributed`` when a process group is initialised, else None (torch is not imported)."""
    if "torch.distributed" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def is_distributed() -> bool:
    """True in one rank of an initialised process group of more than one process."""
    dist = _dist()
    return dist is not None and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    dist = _dist()
    return dist.get_rank() if dist is not None else 0


def world_size() -> int:
    """Number of processes in the job (1 outside a process group)."""
    dist = _dist()
    return dist.get_world_size() if dist is not None else 1


def local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``; 0 outside a process group)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """True in rank 0 (and in a single process): the one rank that writes outputs."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backend (``gloo``, ``cpu:gloo,cuda:nccl``), None in a single process."""
    dist = _dist()
    return str(dist.get_backend()) if dist is not None else None


def init_from_env(device: str = "auto") -> bool:
    """Join the process group the launcher describes; True when this call initialised it.

    A no-op (False) when ``WORLD_SIZE`` is unset or 1, or when a group is already initialised. ``device``
    is the stage's device setting: unless it is ``cpu``, CUDA ranks get NCCL for CUDA tensors and this
    process's current CUDA device becomes ``cuda:LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or _dist() is not None:
        return False
    import torch
    import torch.distributed as dist

    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    return True


@contextmanager
def session(device: str = "auto") -> Iterator[None]:
    """:func:`init_from_env` for the block; the process group it created is destroyed when the block ends."""
    started = init_from_env(device)
    try:
        yield
    finally:
        if started and _dist() is not None:
            _dist().destroy_process_group()


def rank_device(device):
    """``device`` (a ``torch.device``) for this rank: a CUDA device becomes ``cuda:LOCAL_RANK`` in a job."""
    import torch

    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", local_rank())
    return device


def rank_device_name(device: str = "auto") -> str:
    """A device setting (``auto``, ``cuda``, ``cpu``, ...) for this rank: CUDA becomes ``cuda:LOCAL_RANK`` in a
    job, anything else is returned as it is."""
    if not is_distributed():
        return device
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if is_distributed():
        _dist().barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out


def all_reduce_sum(values) -> np.ndarray:
    """Element-wise sum over ranks of a float array (float64; ``values`` as they are in a single process)."""
    if not is_distributed():
        return np.asarray(values)
    import torch

    t = torch.as_tensor(np.asarray(values, dtype=np.float64))
    _dist().all_reduce(t)
    return t.numpy()


def all_reduce_min(mask: np.ndarray) -> np.ndarray:
    """Element-wise minimum over ranks of a bool or integer array (``mask`` as it is in a single process)."""
    if not is_distributed():
        return mask
    import torch

    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int32))
    _dist().all_reduce(t, op=_dist().ReduceOp.MIN)
    return t.numpy().astype(mask.dtype)


def shard_slice(n: int) -> slice:
    """This rank's contiguous share of ``n`` items (sizes differ by at most one, as ``numpy.array_split``)."""
    world, r = world_size(), rank()
    q, extra = divmod(n, world)
    start = r * q + min(r, extra)
    return slice(start, start + q + (r < extra))


def batch_part(rows: np.ndarray) -> tuple[np.ndarray, float]:
    """This rank's share of a global batch and its loss weight ``world * len(share) / len(rows)``: DDP
    averages gradients over ranks, so the result is the gradient of the mean loss over the whole batch,
    uneven last batches included. A rank left without rows takes the first one with weight 0."""
    part = rows[shard_slice(len(rows))]
    if not len(part):
        return rows[:1], 0.0
    return part, world_size() * len(part) / len(rows)


def gather_rows(part: np.ndarray) -> np.ndarray:
    """Every rank's ``part`` concatenated in rank order: undoes :func:`shard_slice` (``part`` in a single process)."""
    if not is_distributed():
        return part
    return np.concatenate(all_gather_object(part))


def share_rows(out: np.ndarray, owner: np.ndarray) -> None:
    """Give every rank all rows of ``out`` bit for bit: row ``i`` is broadcast from rank ``owner[i]``, which
    must have filled it. ``out`` is a float array that every rank holds at full size; chunks of at most
    :data:`SHARE_CHUNK_BYTES` are sent."""
    if not is_distributed():
        return
    import torch

    dist, me = _dist(), rank()
    row_bytes = max(out[:1].nbytes, 1)
    step = max(1, SHARE_CHUNK_BYTES // row_bytes)
    for src in range(world_size()):
        rows = np.flatnonzero(owner == src)
        for i in range(0, len(rows), step):
            idx = rows[i : i + step]
            buf = torch.from_numpy(np.ascontiguousarray(out[idx]))
            dist.broadcast(buf, src=src)
            if me != src:
                out[idx] = buf.numpy()


def wrap(module, device=None, ignore=(), find_unused_parameters: bool = False):
    """``DistributedDataParallel(module)`` in a job, ``module`` itself in a single process.

    ``ignore``: parameters of ``module`` that DDP must leave alone (stepped by another optimizer whose
    module is wrapped separately). ``device``: the module's ``torch.device``.
    """
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    if ignore:
        ids = {id(p) for p in ignore}
        names = [n for n, p in module.named_parameters() if id(p) in ids]
        # torch's documented way to exclude parameters from a DDP module (pytorch/pytorch#43690)
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)
    cuda = device is not None and device.type == "cuda"
    return DistributedDataParallel(module, device_ids=[device] if cuda else None,
                                   find_unused_parameters=find_unused_parameters)
