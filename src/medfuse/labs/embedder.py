"""``LabEmbedder``: a trained MLTM run folder as a scikit-learn-like lab embedder and imputer.

Inputs are lab values in ORIGINAL units, ``[N, L]`` with NaN where a test was not measured (L = tests
x aggregates, aggregate-major, in the order of ``vocab.json``), or a :class:`~medfuse.data.Cohort`
plus a split name. The embedder normalises with the statistics stored in the run, so it needs no cohort.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from medfuse.data.cohort import Cohort
from medfuse.labs.model import MLTM, MLTMConfig
from medfuse.labs.pretraining import CONFIG_FILE, MODEL_FILE, VOCAB_FILE
from medfuse.torch_utils import resolve_device


class LabEmbedder:
    """Frozen MLTM: ``embed`` (no masking) and ``impute`` (missing values predicted, original units)."""

    def __init__(self, model: MLTM, vocab: dict, config: dict | None = None, device: str | torch.device = "auto"):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.config = config or {}
        self.aggregates: list[str] = list(vocab["aggregates"])
        self.keys: list[str] = list(vocab["keys"])
        a = len(self.aggregates)
        self._median = np.tile(np.asarray(vocab["median"], dtype=np.float64), a)
        self._scale = np.tile(np.asarray(vocab["scale"], dtype=np.float64), a)
        self._clip = float(vocab["clip"])

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "auto") -> LabEmbedder:
        """Load a run folder written by :func:`medfuse.labs.pretrain` (weights via safetensors only)."""
        run = Path(run_dir)
        config = json.loads((run / CONFIG_FILE).read_text())
        vocab = json.loads((run / VOCAB_FILE).read_text())
        model = MLTM(MLTMConfig(**config["model"]))
        model.load_state_dict(load_file(str(run / MODEL_FILE)))
        return cls(model, vocab, config, device)

    @property
    def d_model(self) -> int:
        return self.model.cfg.d_model

    @property
    def token_names(self) -> list[str]:
        """``lab_<itemid>__<aggregate>`` for each of the L tokens, in input column order."""
        return [f"{k}__{a}" for a in self.aggregates for k in self.keys]

    # --- input handling -------------------------------------------------------------------------
    def cohort_values(self, cohort: Cohort, split: str | None = None) -> np.ndarray:
        """[N, L] original-unit values of a cohort split, columns aligned to this run's vocabulary by key.

        Tests of the vocabulary that the cohort lacks are NaN (missing everywhere).
        """
        rows = cohort.rows(split)
        col = {k: i for i, k in enumerate(cohort.lab_keys)}
        out = np.full((len(rows), len(self.token_names)), np.nan)
        for j, agg in enumerate(self.aggregates):
            raw = cohort.lab_values(split, agg, normalized=False).astype(np.float64)
            for t, key in enumerate(self.keys):
                if key in col:
                    out[:, j * len(self.keys) + t] = raw[:, col[key]]
        return out

    def _values(self, values, split: str | None) -> np.ndarray:
        if isinstance(values, (str, Path)):
            values = Cohort(values)
        if isinstance(values, Cohort):
            return self.cohort_values(values, split)
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.token_names):
            raise ValueError(f"expected lab values of shape [N, {len(self.token_names)}], got {list(x.shape)}")
        return x

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Original units -> clipped robust z-scores (NaN stays NaN), as in ``Cohort.normalize``; ``x`` [N, L]
        in token order, or [..., T] one value per test of :attr:`keys` (:meth:`normalize_tests`)."""
        width = x.shape[-1]
        return np.clip((x - self._median[:width]) / self._scale[:width], -self._clip, self._clip)

    def normalize_tests(self, x: np.ndarray) -> np.ndarray:
        """``[..., T]`` original units, one value per test of :attr:`keys` (any aggregate) -> z-scores."""
        if x.shape[-1] != len(self.keys):
            raise ValueError(f"expected one value per test ({len(self.keys)}), got {x.shape[-1]}")
        return self.normalize(x)

    def denormalize(self, z: np.ndarray) -> np.ndarray:
        return z * self._scale + self._median

    def _batches(self, x: np.ndarray, batch_size: int):
        z = torch.from_numpy(self.normalize(x).astype(np.float32))
        for i in range(0, len(z), batch_size):
            zb = z[i : i + batch_size].to(self.device)
            yield zb, ~torch.isnan(zb)

    # --- public API -----------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, values, split: str | None = None, batch_size: int = 1024,
              numpy: bool = False) -> tuple[torch.Tensor, torch.Tensor] | tuple[np.ndarray, np.ndarray]:
        """``pooled`` [N, d] (the [CLS] output) and ``tokens`` [N, L, d], with no masking.

        ``tokens[i, j]`` is the encoder output of token j when it was measured in admission i, and a zero
        vector when it was not (``~np.isnan(values)`` tells which). Returned as float32 CPU torch
        tensors, or numpy arrays when ``numpy=True``.
        """
        x = self._values(values, split)
        pooled, tokens = [], []
        for zb, obs in self._batches(x, batch_size):
            p, t = self.model.embed(zb, obs)
            pooled.append(p.float().cpu())
            tokens.append(t.float().cpu())
        d, n_tok = self.d_model, len(self.token_names)
        p = torch.cat(pooled) if pooled else torch.zeros(0, d)
        t = torch.cat(tokens) if tokens else torch.zeros(0, n_tok, d)
        return (p.numpy(), t.numpy()) if numpy else (p, t)

    @torch.no_grad()
    def reconstruct(self, values, split: str | None = None, batch_size: int = 1024) -> np.ndarray:
        """The model's prediction of EVERY token [N, L] in original units, given all observed values."""
        x = self._values(values, split)
        preds = [self.model.reconstruct(zb, obs).double().cpu().numpy() for zb, obs in self._batches(x, batch_size)]
        z = np.concatenate(preds) if preds else np.zeros((0, x.shape[1]))
        return self.denormalize(z)

    def impute(self, values, split: str | None = None, batch_size: int = 1024) -> np.ndarray:
        """Completed values [N, L] (float64, original units): measured values kept, missing ones predicted."""
        x = self._values(values, split)
        return np.where(np.isnan(x), self.reconstruct(x, batch_size=batch_size), x)
