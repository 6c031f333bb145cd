"""Why a label was predicted: the lab tests and note lines that pushed each positive label most.

Every score is a signed change of the label's probability (positive = pushed towards the label):

* **note lines**, by occlusion: the line is removed from its field, the field is pooled again with the
  same codebook (max + bag of line clusters, :class:`~medfuse.notes.lines.LineEncoder`) and the record is
  predicted again; ``score = p(record) - p(record without the line)``. A record left without any line
  takes the missing-note path, as a record without a note does. Needs ``notes.unit = "lines"``; with
  ``"text"`` no line is scored.
* **lab tests**, by occlusion (the default): the test is made unobserved (its MLTM tokens masked, its
  value channels and measured flag 0: a record that never measured it); same score. With
  ``lab_method="integrated_gradients"``: Captum's integrated gradients of the probability with respect
  to the normalised values that enter the network (the MLTM input, run inside the attributed forward,
  and the value channels), from the baseline "every measured test at its training median" (0 in robust
  z units; the measured flags stay), summed per test.

Occlusion is the default: its score is what deleting the item does, the quantity the faithfulness check
of ``benchmarks/explain.py`` measures (docs/predict.md, "Explanations"). All variants of a record
(the record itself, one per removed item) go through the network as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medfuse.training.inputs import lab_missing, standardise_notes

LAB_METHODS = ("occlusion", "integrated_gradients")
IG_STEPS = 32
BATCH = 512


@dataclass
class RecordScores:
    """One record's scores: ``probability`` [labels] of the record as a whole, ``labs`` [labels, tests]
    for its measured ``tests`` (vocabulary positions) and ``lines`` [labels, lines] for its note lines
    (positions in :attr:`Explainer.lines`, note order)."""

    probability: np.ndarray
    tests: np.ndarray
    labs: np.ndarray
    lines: np.ndarray
    line_index: np.ndarray


class Explainer:
    """Scores and perturbed predictions of the records of one prepared batch (``Predictor.prepare``)."""

    def __init__(self, predictor: Any, prepared: Any):
        self.predictor, self.data, self.net = predictor, prepared.data, predictor.net
        self.n_tests = self.data.lab_values.shape[1]
        n = len(self.data.hadm_ids)
        self.lines = None
        if predictor.lines is not None:
            texts = prepared.texts
            self.lines = predictor.lines.lines([texts.values[i] if texts.has_text[i] else {} for i in range(n)])
        keys = predictor.labs.keys
        tests = predictor.vocab.lab_tests
        row = {k: j for j, k in enumerate(tests.column("key").to_pylist())}
        self.test_meta = [(tests.column("itemid")[row[k]].as_py(), tests.column("label")[row[k]].as_py(),
                           tests.column("unit")[row[k]].as_py() or None) for k in keys]
        cohort = prepared.cohort
        last = cohort.lab_values(None, "last", normalized=False)
        col = {k: j for j, k in enumerate(cohort.lab_keys)}
        self.last_value = np.stack([last[:, col[k]] if k in col else np.full(n, np.nan) for k in keys], axis=1)

    # ---- items ------------------------------------------------------------------------------------
    def tests(self, i: int) -> np.ndarray:
        """Vocabulary positions of the tests record ``i`` measured."""
        observed = self.data.lab_observed[i].reshape(-1, self.n_tests).any(0)
        return np.flatnonzero(observed | (self.data.lab_values[i, :, -1] > 0))

    def line_index(self, i: int) -> np.ndarray:
        """Positions in :attr:`lines` of record ``i``'s note lines, in note order."""
        return np.zeros(0, np.int64) if self.lines is None else np.flatnonzero(self.lines.owner == i)

    # ---- perturbed predictions ----------------------------------------------------------------------
    def _lab_inputs(self, i: int, drop_tests: list[np.ndarray]) -> dict[str, np.ndarray]:
        d, v = self.data, len(drop_tests)
        observed = np.repeat(d.lab_observed[i][None], v, 0)
        values = np.repeat(d.lab_values[i][None], v, 0)
        aggregates = np.arange(observed.shape[1] // self.n_tests)[:, None] * self.n_tests
        for j, tests in enumerate(drop_tests):
            tests = np.asarray(tests, dtype=np.int64)
            observed[j, (aggregates + tests[None, :]).ravel()] = False
            values[j, tests] = 0.0
        return {"lab_x": np.where(observed, d.lab_x[i], 0.0).astype(np.float32), "lab_observed": observed,
                "lab_values": values}

    def _note_inputs(self, i: int, drop_lines: list[np.ndarray]) -> dict[str, np.ndarray]:
        d, v = self.data, len(drop_lines)
        own = self.line_index(i)
        if not len(own):
            return {"note": np.repeat(d.note[i][None], v, 0), "note_missing": np.repeat(d.note_missing[i], v)}
        keep = [np.setdiff1d(own, np.asarray(drop, dtype=np.int64)) for drop in drop_lines]
        index = np.concatenate(keep)
        owner = np.repeat(np.arange(v), [len(k) for k in keep])
        vec = self.predictor.lines.encode(self.lines.take(index, owner), v)
        missing = np.bincount(owner, minlength=v) == 0
        note = standardise_notes(vec, missing, self.predictor.note_mean, self.predictor.note_std)
        return {"note": note, "note_missing": missing}

    def _batch(self, inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        device = self.predictor.device
        batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in inputs.items()}
        batch["lab_missing"] = lab_missing(batch["lab_observed"])
        return batch

    def _lab_embedding(self, batch: dict[str, torch.Tensor], distinct: bool = False) -> None:
        """The frozen MLTM's tokens of the (perturbed) lab input, as ``assemble_fusion_data`` computes them;
        ``distinct``: rows with the same observed tests have the same input, embedded once."""
        if self.net.lab_encoder is not None:
            return
        x, observed, index = batch["lab_x"], batch["lab_observed"], None
        if distinct:
            observed, index = torch.unique(observed, dim=0, return_inverse=True)
            x = torch.zeros_like(observed, dtype=x.dtype).index_put_((index,), x)  # rows of a group are equal
        device = self.predictor.labs.device
        pooled, tokens = (t.to(batch["note"].device) for t in self.predictor.labs.model.embed(x.to(device),
                                                                                             observed.to(device)))
        batch["lab_pooled"], batch["lab_tokens"] = (pooled, tokens) if index is None else (pooled[index], tokens[index])

    @torch.inference_mode()
    def probabilities(self, i: int, drop_tests: list[np.ndarray], drop_lines: list[np.ndarray]) -> np.ndarray:
        """``[variants, labels]``: record ``i`` predicted with, per variant, ``drop_tests[v]`` made unobserved
        and ``drop_lines[v]`` (positions in :attr:`lines`) removed from its note."""
        out = []
        for s in range(0, len(drop_tests), BATCH):
            batch = self._batch({**self._lab_inputs(i, drop_tests[s : s + BATCH]),
                                 **self._note_inputs(i, drop_lines[s : s + BATCH])})
            self._lab_embedding(batch, distinct=True)
            out.append(torch.sigmoid(self.net(batch).logits).float().cpu().numpy())
        return np.concatenate(out)

    # ---- scores -----------------------------------------------------------------------------------
    def scores(self, i: int, lab_method: str = "occlusion", labels: np.ndarray | None = None) -> RecordScores:
        """Occlusion scores of every measured test and note line of record ``i`` for every label (integrated
        gradients for the tests with ``lab_method``, computed for ``labels`` only, 0 for the others)."""
        if lab_method not in LAB_METHODS:
            raise ValueError(f"lab_method must be one of {LAB_METHODS}, not {lab_method!r}")
        tests, lines = self.tests(i), self.line_index(i)
        none = np.zeros(0, np.int64)
        drop_tests = [none] + ([t[None] for t in tests] if lab_method == "occlusion" else []) + [none] * len(lines)
        drop_lines = [none] * (len(drop_tests) - len(lines)) + [line[None] for line in lines]
        p = self.probabilities(i, drop_tests, drop_lines)
        full = p[0]
        lab_scores = (full - p[1 : 1 + len(tests)]).T if lab_method == "occlusion" else \
            self.integrated_gradients(i, tests, np.arange(len(full)) if labels is None else labels)
        return RecordScores(full, tests, lab_scores, (full - p[len(p) - len(lines):]).T, lines)

    def integrated_gradients(self, i: int, tests: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``[labels, tests]`` integrated gradients of the probabilities, summed per test (rows of labels not
        asked for are 0)."""
        from captum.attr import IntegratedGradients

        out = np.zeros((len(self.data.label_names), len(tests)), np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        if not len(tests) or not len(labels):
            return out
        base = self._batch({**self._lab_inputs(i, [np.zeros(0, np.int64)] * len(labels)),
                            **self._note_inputs(i, [np.zeros(0, np.int64)] * len(labels))})
        values = base["lab_values"]

        def forward(z, channels, observed, flag, note, note_missing):
            batch = {"lab_x": z, "lab_observed": observed, "lab_values": torch.cat([channels, flag], -1),
                     "lab_missing": ~observed.any(1), "note": note, "note_missing": note_missing}
            self._lab_embedding(batch)
            return torch.sigmoid(self.net(batch).logits)

        inputs = (base["lab_x"], values[..., :-1])
        with torch.enable_grad():
            z_attr, channel_attr = IntegratedGradients(forward).attribute(
                inputs, baselines=tuple(torch.zeros_like(x) for x in inputs), target=labels.tolist(),
                additional_forward_args=(base["lab_observed"], values[..., -1:], base["note"], base["note_missing"]),
                n_steps=IG_STEPS, internal_batch_size=BATCH)
        per_test = z_attr.reshape(len(labels), -1, self.n_tests).sum(1) + channel_attr.sum(-1)
        out[labels] = per_test.detach().double().cpu().numpy()[:, tests]
        return out

    # ---- output -----------------------------------------------------------------------------------
    def lab_item(self, i: int, test: int, score: float) -> dict:
        itemid, label, unit = self.test_meta[test]
        value = self.last_value[i, test]  # the stored value is float32: 7 significant digits are what it holds
        return {"test": itemid, "label": label, "value": None if np.isnan(value) else float(f"{value:.7g}"),
                "unit": unit, "score": float(score)}

    def line_item(self, line: int, score: float) -> dict:
        return {"field": self.predictor.lines.fields[self.lines.field[line]], "text": self.lines.texts[line],
                "score": float(score)}

    def explain(self, i: int, prob: np.ndarray, k: int | None = 5, lab_method: str = "occlusion") -> dict:
        """``{label: {"probability", "labs", "note_lines"}}`` for the labels decided positive; each list the
        ``k`` items with the highest scores (all with ``k=None``), highest first."""
        positive = np.flatnonzero(prob >= self.predictor.thresholds)
        if not len(positive):
            return {}
        s = self.scores(i, lab_method, positive)
        out = {}
        for j in positive:
            labs = np.argsort(-s.labs[j], kind="stable")[:k]
            lines = np.argsort(-s.lines[j], kind="stable")[:k]
            out[self.predictor.label_names[j]] = {
                "probability": float(prob[j]),
                "labs": [self.lab_item(i, int(s.tests[t]), s.labs[j, t]) for t in labs],
                "note_lines": [self.line_item(int(s.line_index[n]), s.lines[j, n]) for n in lines],
            }
        return out


def explain_batch(predictor: Any, prepared: Any, prob: np.ndarray, k: int | None = 5,
                  lab_method: str = "occlusion") -> list[dict]:
    """Per record of a prepared batch, the explanation of each label decided positive (:meth:`Explainer.explain`)."""
    explainer = Explainer(predictor, prepared)
    return [explainer.explain(i, prob[i], k, lab_method) for i in range(len(prob))]
