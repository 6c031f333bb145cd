"""LoRA fine-tuning of a note backbone with a linear multi-label head (``medfuse finetune-notes``).

As in MEDFuse, the language model is adapted to the prediction task with LoRA (peft): low-rank
adapters on the attention projections (defaults per family: BERT ``query``/``value``, Llama
``q_proj``/``k_proj``/``v_proj``/``o_proj``) plus a linear head on the pooled note vector, trained with
``BCEWithLogits`` on the training split. Every window of a note goes through the model and the note
vector is the same token-weighted window mean that ``embed-notes`` computes, so fine-tuning sees
exactly what is embedded later. The validation macro-F1 (threshold 0.5) is computed after every
epoch; training stops after ``patience`` epochs without improvement and the best epoch is kept.

On a GPU the model runs in bfloat16 with gradient checkpointing (so 7-8B models fit). On CPU the weights
stay float32 and, when the CPU has native bfloat16 instructions (AVX512-BF16/AMX), the forward passes run
under bfloat16 autocast: 2.5x faster on 2 cores (docs/notes.md), float32 otherwise.
The run folder holds only ``adapter/`` (peft, ``adapter_model.safetensors``), ``head.safetensors`` and
``finetune_config.json`` (base model, its identity hash, pooling, windowing, labels, history).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medfuse import distributed
from medfuse.data.cohort import Cohort
from medfuse.notes.backbone import Backbone, cpu_native_bf16, folder_identity, load_backbone, resolve_pooling
from medfuse.notes.embed import (
    DEFAULT_STRIDE,
    NoteEmbedder,
    combine_windows,
    encode_windows,
    make_batches,
    tokenize_windows,
)
from medfuse.notes.lines import LineEncoder
from medfuse.notes.text import DEFAULT_TEMPLATE, NoteTexts, build_texts, segments, template_fields
from medfuse.progress import ProgressFn, no_progress

# tried in order; the first set whose names all occur among the model's linear layers is used
_TARGET_CANDIDATES = {
    "decoder": (["q_proj", "k_proj", "v_proj", "o_proj"], ["query_key_value", "dense"], ["c_attn", "c_proj"],
                ["Wqkv", "out_proj"], ["qkv_proj", "o_proj"]),
    "encoder": (["query", "value"], ["q_lin", "v_lin"], ["query_proj", "value_proj"], ["q_proj", "v_proj"],
                ["Wqkv"]),
}
FINETUNE_CONFIG = "finetune_config.json"


def default_target_modules(model: Any, family: str) -> list[str]:
    """LoRA target module names for a model: BERT family ``query``/``value``, Llama ``q/k/v/o_proj``."""
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
             if type(m).__name__ in ("Linear", "Conv1D")}
    others = "encoder" if family == "decoder" else "decoder"
    for cand in (*_TARGET_CANDIDATES[family], *_TARGET_CANDIDATES[others]):
        if all(c in names for c in cand):
            return list(cand)
    raise ValueError("cannot guess the LoRA target modules of this model; set notes.target_modules")


def wants_cpu_autocast(backbone: Backbone, setting: bool | str = "auto") -> bool:
    """Whether to run ``backbone`` under CPU bfloat16 autocast: ``auto`` = a float32 model on a CPU with
    native bfloat16 instructions."""
    import torch

    if setting == "auto":
        return (not str(backbone.device).startswith("cuda") and backbone.dtype == torch.float32
                and cpu_native_bf16())
    return setting in (True, "on")


def cpu_autocast(enabled: bool):
    """``torch.autocast`` to bfloat16 on CPU (a no-op when not ``enabled``)."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


@dataclass
class FineTuneResult:
    """A fine-tuned model in memory: the peft-wrapped backbone, the head and the training history."""

    backbone: Backbone  # backbone.model is the peft model
    head: Any  # torch.nn.Linear
    pooling: str
    max_length: int
    stride: int
    target_modules: list[str]
    unit: str = "text"
    fields: list[str] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_macro_auprc: float | None = None
    best_val_macro_f1: float | None = None
    autocast: bool = False

    def embedder(self, normalize: bool = True) -> NoteEmbedder:
        """Embed with the in-memory fine-tuned model (same vectors as ``embed-notes --adapter`` on the saved run)."""
        return NoteEmbedder.from_backbone(self.backbone, self.pooling, self.max_length, self.stride, normalize)

    def predict_inputs(self, inputs: TextInputs | LineInputs, docs: np.ndarray | None = None,
                       batch_size: int = 64) -> np.ndarray:
        """Head probabilities ``[len(docs), n_labels]`` of prepared inputs (``docs``: indices, default all)."""
        import torch

        bb, out = self.backbone, []
        docs_all = np.arange(len(inputs)) if docs is None else np.asarray(docs)
        with torch.inference_mode():
            for start in range(0, len(docs_all), batch_size):
                docs = docs_all[start:start + batch_size]
                x = inputs.vectors(bb.model, docs, bb.tokenizer.pad_token_id, self.pooling, bb.device, self.autocast)
                out.append(torch.sigmoid(self.head(x.float())).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.head.out_features), np.float32)

    def predict_proba(self, docs: list) -> np.ndarray:
        """Head probabilities ``[N, n_labels]`` of texts (``unit = "text"``) or field values (``lines``)."""
        bb = self.backbone
        return self.predict_inputs(model_inputs(bb, docs, self.unit, self.max_length, self.stride, self.fields))


def macro_f1(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y.astype(int), (prob >= threshold).astype(int), average="macro", zero_division=0))


def macro_auprc(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean average precision over the labels that have a positive."""
    from sklearn.metrics import average_precision_score

    cols = [j for j in range(y.shape[1]) if 0 < y[:, j].sum()]
    return float(np.mean([average_precision_score(y[:, j], prob[:, j]) for j in cols])) if cols else float("nan")


class TextInputs:
    """Whole templated texts, cut into windows once; a batch's vector per admission is the token-weighted
    window mean (``notes.unit = "text"``): what ``embed-notes`` computes for an adapter of this unit."""

    unit = "text"

    def __init__(self, tokenizer: Any, texts: list[str], hidden: int, max_length: int, stride: int):
        self.width = int(hidden)
        self.ids, doc = tokenize_windows(tokenizer, texts, max_length, stride)
        self.windows_of: list[list[int]] = [[] for _ in texts]
        for w, d in enumerate(doc):
            self.windows_of[d].append(w)

    def __len__(self) -> int:
        return len(self.windows_of)

    def vectors(self, model: Any, docs: np.ndarray, pad: int, pooling: str, device: Any, autocast: bool):
        """``[len(docs), hidden]`` (differentiable when grad is on)."""
        import torch

        wins = [w for d in docs for w in self.windows_of[d]]
        local = torch.tensor([j for j, d in enumerate(docs) for _ in self.windows_of[d]], device=device)
        weights = torch.tensor([len(self.ids[w]) for w in wins], device=device, dtype=torch.float32)
        with cpu_autocast(autocast):
            vecs = encode_windows(model, [self.ids[w] for w in wins], pad, pooling, device).float()
        return combine_windows(vecs, weights, local, len(docs))


class LineInputs:
    """Every line of every template field (``notes.unit = "lines"``, :func:`medfuse.notes.text.segments`),
    each distinct line tokenized once. A batch encodes only its distinct lines (length-bucketed, so
    short lines are not padded to the longest), L2-normalises them and max-pools them per field: the
    ``fields x hidden`` max blocks that :class:`~medfuse.notes.lines.LineEncoder` computes, zeros for an
    absent field."""

    unit = "lines"

    def __init__(self, tokenizer: Any, values: list[dict[str, str | None]], fields: list[str], hidden: int,
                 max_length: int, stride: int, batch_tokens: int = 4096):
        index: dict[str, int] = {}
        line, owner, field = [], [], []
        for i, v in enumerate(values):
            for j, f in enumerate(fields):
                for piece in segments(v.get(f), f):
                    line.append(index.setdefault(piece, len(index)))
                    owner.append(i)
                    field.append(j)
        self.n, self.fields, self.hidden, self.batch_tokens = len(values), list(fields), int(hidden), int(batch_tokens)
        self.width = len(self.fields) * self.hidden
        self.line, self.owner, self.field = (np.asarray(a, dtype=np.int64) for a in (line, owner, field))
        self.starts = np.searchsorted(self.owner, np.arange(len(values) + 1))  # owners are ascending
        self.ids, self.window_line = tokenize_windows(tokenizer, list(index), max_length, stride) if index else ([], [])
        self.windows_of: list[list[int]] = [[] for _ in index]
        for w, ln in enumerate(self.window_line):
            self.windows_of[ln].append(w)

    def __len__(self) -> int:
        return self.n

    def vectors(self, model: Any, docs: np.ndarray, pad: int, pooling: str, device: Any, autocast: bool):
        """``[len(docs), fields * hidden]`` (differentiable when grad is on)."""
        import torch

        occ = np.concatenate([np.arange(self.starts[d], self.starts[d + 1]) for d in docs]) if len(docs) else \
            np.zeros(0, np.int64)
        slot = np.repeat(np.arange(len(docs)), [self.starts[d + 1] - self.starts[d] for d in docs])
        lines, line_row = np.unique(self.line[occ], return_inverse=True)
        wins = [w for ln in lines for w in self.windows_of[ln]]
        win_row = np.asarray([r for r, ln in enumerate(lines) for _ in self.windows_of[ln]], dtype=np.int64)
        lengths = np.asarray([len(self.ids[w]) for w in wins], dtype=np.int64)
        parts, order = [], []
        with cpu_autocast(autocast):
            for rows in make_batches(lengths, self.batch_tokens, len(wins)):
                parts.append(encode_windows(model, [self.ids[wins[r]] for r in rows], pad, pooling, device).float())
                order.append(rows)
        width = self.hidden
        out = torch.zeros(len(docs) * len(self.fields), width, device=device)
        if not parts:
            return out.reshape(len(docs), -1)
        win_vecs = torch.zeros(len(wins), width, device=device).index_copy(
            0, torch.from_numpy(np.concatenate(order)).to(device), torch.cat(parts))
        line_vecs = combine_windows(win_vecs, torch.from_numpy(lengths).to(device),
                                    torch.from_numpy(win_row).to(device), len(lines))
        line_vecs = torch.nn.functional.normalize(line_vecs, dim=1)
        target = torch.from_numpy(slot * len(self.fields) + self.field[occ]).to(device)
        out = out.scatter_reduce(0, target[:, None].expand(-1, width), line_vecs[torch.from_numpy(line_row).to(device)],
                                 reduce="amax", include_self=False)
        return out.reshape(len(docs), -1)


def _tuner(model: Any, head: Any):
    """The adapted model and its head as one module, so that DistributedDataParallel sees one forward
    pass per step whatever the number of length buckets a batch is encoded in."""
    import torch

    class Tuner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.head = model, head

        def forward(self, inputs, docs, pad, pooling, device, autocast):
            return self.head(inputs.vectors(self.model, docs, pad, pooling, device, autocast))

    return Tuner()


def model_inputs(backbone: Backbone, docs: list, unit: str, max_length: int, stride: int,
                 fields: list[str] | None = None) -> TextInputs | LineInputs:
    """Training inputs of ``unit``: ``docs`` are texts (``text``) or per-admission field values (``lines``)."""
    if unit == "lines":
        return LineInputs(backbone.tokenizer, docs, list(fields or []), backbone.hidden_size, max_length, stride)
    return TextInputs(backbone.tokenizer, docs, backbone.hidden_size, max_length, stride)


def train_lora(backbone: Backbone, train_docs: list, y_train: np.ndarray, val_docs: list | None = None,
               y_val: np.ndarray | None = None, *, unit: str = "text", fields: list[str] | None = None,
               pooling: str | None = None, max_length: int | None = None, stride: int = DEFAULT_STRIDE,
               rank: int = 8, alpha: float = 16.0, dropout: float = 0.05, target_modules: list[str] | None = None,
               lora_layers: int = 0, epochs: int = 5, schedule_epochs: int = 0, batch_size: int = 8,
               lr: float = 2e-4, head_lr: float = 1e-3, weight_decay: float = 0.0, patience: int = 2, pos_weight: bool = True, max_minutes: float = 0.0,
               gradient_checkpointing: str | bool = "auto", autocast: str | bool = "auto", seed: int = 0,
               progress: ProgressFn | None = None) -> FineTuneResult:
    """Train LoRA adapters + a linear head in place on ``backbone`` (which becomes a peft model).

    ``lora_layers``: adapt only the top this many transformer layers (0 = all): back-propagation then
    stops below them, so a step costs less.
    ``unit``: ``text`` (``docs`` are whole texts, windowed) or ``lines`` (``docs`` are dicts of field
    values; the head reads the per-field max of the normalised line vectors of ``fields``).
    The learning rates warm up linearly over the first 5% of the steps and decay on a cosine to 0 at
    ``schedule_epochs`` (0 = ``epochs``; longer keeps the rate high in a short run). ``max_minutes``
    (0 = none) is a time budget: after each epoch, training stops when the mean epoch time says the next
    would not fit. Early stopping and the kept epoch follow validation macro-AUPRC (``patience`` epochs
    without a better one).
    ``autocast``: bfloat16 autocast of a float32 model on CPU (``auto``: when the CPU has native bfloat16).
    Under ``torchrun`` (:mod:`medfuse.distributed`) the model and head are one DistributedDataParallel
    module: every rank takes its share of each global batch (the same shuffle), validation is sharded and
    gathered, and rank 0's score and time estimate decide for all.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from medfuse.torch_utils import warmup_cosine

    progress = progress or no_progress
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pooling = resolve_pooling(pooling, backbone.family)
    max_length = min(int(max_length), backbone.max_length) if max_length else backbone.max_length
    y_train = np.asarray(y_train, dtype=np.float32)
    device = distributed.rank_device(torch.device(backbone.device))
    gpu = device.type == "cuda"

    net = backbone.model
    if gradient_checkpointing in ("on", True) or (gradient_checkpointing == "auto" and gpu):
        enable = getattr(net, "activation_checkpointing_enable", None) or net.gradient_checkpointing_enable
        enable()
    targets = list(target_modules) if target_modules else default_target_modules(net, backbone.family)
    n_layers = int(getattr(net.config, "num_hidden_layers", 0) or 0)
    layers = list(range(max(n_layers - lora_layers, 0), n_layers)) if lora_layers and n_layers else None
    lcfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                      layers_to_transform=layers)
    with warnings.catch_warnings():  # peft probes a property transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(net, lcfg)
    backbone.model = model
    train = model_inputs(backbone, train_docs, unit, max_length, stride, fields)
    val = model_inputs(backbone, val_docs, unit, max_length, stride, fields) if val_docs else None
    head = torch.nn.Linear(train.width, y_train.shape[1]).to(device)
    torch.nn.init.zeros_(head.bias)
    tuner = distributed.wrap(_tuner(model, head), device)

    lora_params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": lora_params, "lr": lr}, {"params": head.parameters(), "lr": head_lr}],
                            weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(train) // batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine((schedule_epochs or epochs) * steps_per_epoch, 0.05))
    plan = epochs  # epochs to run: shrunk to what fits the time budget after each epoch
    if pos_weight:
        pos = y_train.sum(0)
        pw = torch.tensor(np.clip((len(y_train) - pos) / np.maximum(pos, 1), 1.0, 100.0), dtype=torch.float32)
    else:
        pw = None
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pw.to(device) if pw is not None else None)
    pad = backbone.tokenizer.pad_token_id

    result = FineTuneResult(backbone, head, pooling, max_length, int(stride), targets, unit=unit,
                            fields=list(fields or []), autocast=wants_cpu_autocast(backbone, autocast))
    best, best_state, bad, step = -np.inf, None, 0, 0
    for epoch in range(1, epochs + 1):
        tuner.train()
        order = rng.permutation(len(train))
        losses = []
        for start in range(0, len(order), batch_size):
            docs, weight = distributed.batch_part(order[start:start + batch_size])
            logits = tuner(train, docs, pad, pooling, device, result.autocast)
            loss = loss_fn(logits, torch.from_numpy(y_train[docs]).to(device))
            opt.zero_grad(set_to_none=True)
            (loss * weight).backward()  # DDP averages over ranks: the gradient of the whole batch's mean
            torch.nn.utils.clip_grad_norm_(lora_params + list(head.parameters()), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()) * weight)
            step += 1
            progress("fine-tune notes", step / (plan * steps_per_epoch))
        tuner.eval()
        loss = float(distributed.all_reduce_sum([np.mean(losses)])[0]) / distributed.world_size()
        record = {"epoch": epoch, "train_loss": loss, "seconds": round(time.perf_counter() - started, 1)}
        if val is not None:
            shard = np.arange(len(val))[distributed.shard_slice(len(val))]
            prob = distributed.gather_rows(result.predict_inputs(val, shard))
            record["val_macro_auprc"] = macro_auprc(np.asarray(y_val), prob)
            record["val_macro_f1"] = macro_f1(np.asarray(y_val), prob)
        record = distributed.broadcast_object(record)  # rank 0's scores and clock decide on every rank
        result.history.append(record)
        score = record.get("val_macro_auprc", -record["train_loss"])
        if score > best:
            best, bad, result.best_epoch = score, 0, epoch
            best_state = ({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                          {k: v.detach().clone() for k, v in head.state_dict().items()})
        else:
            bad += 1
        if max_minutes:  # the next epoch must fit: stop when the mean epoch time says it would not
            plan = max(epoch, min(epochs, int(60 * max_minutes // (record["seconds"] / epoch))))
        if bad >= patience or epoch >= plan:
            break
    if best_state is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, v in best_state[0].items():
                params[n].copy_(v)
        head.load_state_dict(best_state[1])
    if val is not None:
        best_record = result.history[result.best_epoch - 1]
        result.best_val_macro_auprc = best_record["val_macro_auprc"]
        result.best_val_macro_f1 = best_record["val_macro_f1"]
    model.eval()
    head.eval()
    progress("fine-tune notes", 1.0)
    return result


def save_finetuned(result: FineTuneResult, out: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``adapter/`` (peft safetensors), ``head.safetensors`` and ``finetune_config.json``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.backbone.model.save_pretrained(str(out / "adapter"), safe_serialization=True)
    head = {k: v.detach().float().cpu().contiguous() for k, v in result.head.state_dict().items()}
    save_file(head, str(out / "head.safetensors"))
    (out / FINETUNE_CONFIG).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return out


def load_head(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(weight [n_labels, d], bias [n_labels], label names)`` of a fine-tuning run's linear head."""
    from safetensors.numpy import load_file

    run_dir = Path(run_dir)
    head = load_file(str(run_dir / "head.safetensors"))
    meta = json.loads((run_dir / FINETUNE_CONFIG).read_text())
    return head["weight"], head["bias"], list(meta.get("labels", []))


def head_probabilities(run_dir: str | Path, notes: NoteTexts, label_names: list[str], cfg: Any = None) -> np.ndarray:
    """The fine-tuned model's own predictions ``[N, labels]`` for every admission of ``notes`` (the
    paper's "fine-tuned language model" baseline): its linear head on what it was trained on, the
    un-normalised pooled vectors of whole texts (``unit = "text"``) or the per-field max blocks of
    normalised line vectors (``unit = "lines"``). A row without text gets the head's bias alone."""
    from medfuse.config import NotesConfig
    from medfuse.notes.embeddings import embedder_from_config

    weight, bias, labels = load_head(run_dir)
    if labels and labels != list(label_names):
        raise ValueError(f"{run_dir}: the head predicts {labels}, not {list(label_names)}")
    meta = json.loads((Path(run_dir) / FINETUNE_CONFIG).read_text())
    unit = meta.get("unit", "text")
    cfg = (cfg or NotesConfig()).model_copy(update={"normalize": unit == "lines"})
    rows = np.flatnonzero(notes.has_text)
    x = np.zeros((len(notes), weight.shape[1]), np.float32)
    if len(rows):
        embedder = embedder_from_config(cfg, model=None, adapter=run_dir)
        if unit == "lines":
            x[rows] = LineEncoder(embedder, meta["fields"], clusters=0).transform([notes.values[i] for i in rows])
        else:
            x[rows] = embedder.embed([notes.texts[i] for i in rows])
    return (1.0 / (1.0 + np.exp(-(x @ weight.T + bias)))).astype(np.float32)


def finetune_notes(cohort: str | Path | Cohort, out: str | Path, cfg: Any = None, *, model: str | Path | None = None,
                   progress: ProgressFn | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` (default: ``cfg.model``) on the cohort's training split and save the run to ``out``."""
    if cfg is None:
        from medfuse.config import NotesConfig

        cfg = NotesConfig()
    progress = progress or no_progress
    t0 = time.perf_counter()
    cohort = cohort if isinstance(cohort, Cohort) else Cohort(cohort)
    template = cfg.template or DEFAULT_TEMPLATE
    nt = build_texts(cohort, template)
    y = cohort.labels()
    train = np.flatnonzero((nt.split == "train") & nt.has_text)
    val = np.flatnonzero((nt.split == "val") & nt.has_text)
    if not len(train):
        raise ValueError("no training admission has a note or lab text")
    model_name = str(model or cfg.model)
    backbone = load_backbone(model_name, distributed.rank_device_name(cfg.device), cfg.dtype, training=True)
    progress("load model", 1.0)
    fields = template_fields(template)
    docs = nt.values if cfg.unit == "lines" else nt.texts
    result = train_lora(
        backbone, [docs[i] for i in train], y[train], [docs[i] for i in val], y[val], unit=cfg.unit, fields=fields,
        max_minutes=cfg.max_minutes, pooling=cfg.pooling, max_length=cfg.max_length or None, stride=cfg.stride, rank=cfg.lora_rank,
        alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=cfg.target_modules or None,
        lora_layers=cfg.lora_layers, schedule_epochs=cfg.schedule_epochs,
        epochs=cfg.epochs, batch_size=cfg.train_batch_size, lr=cfg.lr, head_lr=cfg.head_lr,
        weight_decay=cfg.weight_decay, patience=cfg.patience, pos_weight=cfg.pos_weight,
        gradient_checkpointing=cfg.gradient_checkpointing, autocast=cfg.cpu_autocast, seed=cfg.seed,
        progress=progress,
    )
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "cohort": str(cohort.path.resolve()),
        "base_model": model_name if model_name == "default" else str(backbone.path),
        "base_identity": folder_identity(backbone.path),
        "family": backbone.family,
        "pooling": result.pooling,
        "max_length": result.max_length,
        "stride": result.stride,
        "template": template,
        "unit": result.unit,
        "fields": fields if result.unit == "lines" else None,
        "labels": cohort.label_names,
        "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                 "target_modules": result.target_modules, "layers": cfg.lora_layers or "all"},
        "training": {k: getattr(cfg, k) for k in ("epochs", "schedule_epochs", "train_batch_size", "lr", "head_lr", "weight_decay",
                                                  "patience", "pos_weight", "max_minutes", "gradient_checkpointing",
                                                  "seed")},
        "cpu_autocast": result.autocast,
        "device": str(backbone.device),
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "train_admissions": len(train),
        "val_admissions": len(val),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_val_macro_auprc": result.best_val_macro_auprc,
        "best_val_macro_f1": result.best_val_macro_f1,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if distributed.is_main():
        save_finetuned(result, out, meta)
    distributed.barrier()
    meta["out"] = str(Path(out))
    return meta
