"""Atomic, pickle-free checkpoints: model weights, optimizer and scheduler state and RNG state.

Tensors go into one safetensors file; everything else (optimizer hyper-parameters, step counters,
numpy RNG state, epoch, history) is JSON in the file's metadata. Writing goes to a temporary file in
the same folder and ``os.replace`` puts it in place, so a killed run never leaves a torn checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor inside ``obj`` by a reference and collect it in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().contiguous().cpu()
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), _split(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _key(k: Any) -> Any:
    return {"int": k} if isinstance(k, int) else k


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and _TENSOR in obj:
        return tensors[obj[_TENSOR]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {(k["int"] if isinstance(k, dict) else k): _join(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors`` save through a temporary file and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested state (dicts, lists, tensors, JSON scalars) atomically to one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, "s", tensors)
    atomic_save_tensors(tensors, path, metadata={"state": json.dumps(tree)})


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Inverse of :func:`save_checkpoint` (no pickle involved)."""
    with safe_open(str(path), framework="pt") as f:
        tree = json.loads(f.metadata()["state"])
    return _join(tree, load_file(str(path)))
