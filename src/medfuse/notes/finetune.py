"""LoRA fine-tuning of a note backbone with a linear multi-label head (``medfuse finetune-notes``).

As in MEDFuse, the language model is adapted to the prediction task with LoRA (peft): low-rank
adapters on the attention projections (defaults per family: BERT ``query``/``value``, Llama
``q_proj``/``k_proj``/``v_proj``/``o_proj``) plus a linear head on the pooled note vector, trained with
``BCEWithLogits`` on the training split. Every window of a note goes through the model and the note
vector is the same token-weighted window mean that ``embed-notes`` computes, so fine-tuning sees
exactly what is embedded later. Training runs on the shared loop (:mod:`medfuse.trainer`): validation
macro-AUPRC after every epoch (macro-F1 at 0.5 beside it); training stops after ``patience`` epochs
without improvement and the best epoch is kept.

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
    NoteEmbedder,
    combine_windows,
    encode_windows,
    make_batches,
    tokenize_windows,
)
from medfuse.notes.lines import LineEncoder
from medfuse.notes.text import DEFAULT_TEMPLATE, NoteTexts, build_texts, segments, template_fields
from medfuse.progress import ProgressFn, no_progress
from medfuse.trainer import StopRule, macro_auprc
from medfuse.trainer import train as train_loop

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


class LoraTask:
    """LoRA adapters + a linear head as a :class:`~medfuse.trainer.Task`: BCE on the training split, AdamW with
    its own learning rate for the head, linear warm-up over 5% of the steps and cosine decay; validation
    macro-AUPRC (and macro-F1 at 0.5) after every epoch, or the training loss without a validation split.

    Under torchrun the model and head are one DistributedDataParallel module: every rank takes its share of
    each global batch (the same shuffle), and validation is sharded and gathered."""

    def __init__(self, result: FineTuneResult, model: Any, train: Any, y_train: np.ndarray, val: Any,
                 y_val: np.ndarray | None, cfg: Any, device: Any):
        import torch

        from medfuse.torch_utils import warmup_cosine

        self.result, self.model, self.train, self.y_train, self.val, self.y_val = result, model, train, y_train, val, y_val
        self.cfg, self.device, self.head = cfg, device, result.head
        self.tuner = distributed.wrap(_tuner(model, self.head), device)
        self.params = [p for p in model.parameters() if p.requires_grad] + list(self.head.parameters())
        lora_params = self.params[: -len(list(self.head.parameters()))]
        self.opt = torch.optim.AdamW([{"params": lora_params, "lr": cfg.lr},
                                      {"params": self.head.parameters(), "lr": cfg.head_lr}],
                                     weight_decay=cfg.weight_decay)
        self.steps = max(1, -(-len(train) // cfg.train_batch_size))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, warmup_cosine((cfg.schedule_epochs or cfg.epochs) * self.steps, 0.05))
        pw = None
        if cfg.pos_weight:
            pos = y_train.sum(0)
            pw = torch.tensor(np.clip((len(y_train) - pos) / np.maximum(pos, 1), 1.0, 100.0), dtype=torch.float32)
        self.loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pw.to(device) if pw is not None else None)
        self.rng = np.random.default_rng(cfg.seed)
        self.best_state = None

    def train_epoch(self, epoch: int, tick) -> dict[str, float]:
        import torch

        bb, batch = self.result.backbone, self.cfg.train_batch_size
        self.tuner.train()
        order = self.rng.permutation(len(self.train))
        losses = []
        for step, start in enumerate(range(0, len(order), batch)):
            docs, weight = distributed.batch_part(order[start:start + batch])
            logits = self.tuner(self.train, docs, bb.tokenizer.pad_token_id, self.result.pooling, self.device,
                                self.result.autocast)
            loss = self.loss_fn(logits, torch.from_numpy(self.y_train[docs]).to(self.device))
            self.opt.zero_grad(set_to_none=True)
            (loss * weight).backward()  # DDP averages over ranks: the gradient of the whole batch's mean
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.sched.step()
            losses.append(float(loss.detach()) * weight)
            tick((step + 1) / self.steps, f"epoch {epoch + 1}")
        self.tuner.eval()
        return {"train_loss": float(distributed.all_reduce_sum([np.mean(losses)])[0]) / distributed.world_size()}

    def validate(self) -> dict[str, float]:
        if self.val is None:
            return {}
        shard = np.arange(len(self.val))[distributed.shard_slice(len(self.val))]
        prob = distributed.gather_rows(self.result.predict_inputs(self.val, shard))
        return {"val_macro_auprc": macro_auprc(np.asarray(self.y_val), prob),
                "val_macro_f1": macro_f1(np.asarray(self.y_val), prob)}

    def keep_best(self) -> None:
        self.best_state = self.state_dict()["weights"]

    def restore_best(self) -> None:
        import torch

        if self.best_state is None:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in self.best_state.items():
                (params[n[len("lora."):]] if n.startswith("lora.") else self.head.get_parameter(n[len("head."):])).copy_(v)

    def state_dict(self) -> dict:
        weights = {f"lora.{n}": p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        weights |= {f"head.{k}": v.detach().clone() for k, v in self.head.state_dict().items()}
        return {"weights": weights, "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "shuffle_rng": self.rng.bit_generator.state, "best": self.best_state or {}}

    def load_state_dict(self, state: dict) -> None:
        self.best_state = state["weights"]
        self.restore_best()
        self.best_state = state["best"] or None
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.rng.bit_generator.state = state["shuffle_rng"]


def train_lora(backbone: Backbone, cfg: Any, train_docs: list, y_train: np.ndarray, val_docs: list | None = None,
               y_val: np.ndarray | None = None, *, fields: list[str] | None = None,
               progress: ProgressFn | None = None) -> FineTuneResult:
    """Train LoRA adapters + a linear head in place on ``backbone`` (which becomes a peft model) with the
    settings of ``cfg`` (a :class:`~medfuse.config.NotesConfig`: ``unit``, ``lora_*``, ``epochs``, ...).

    ``unit = "text"``: ``docs`` are whole texts, windowed; ``"lines"``: ``docs`` are dicts of field values and
    the head reads the per-field max of the normalised line vectors of ``fields``. ``lora_layers``: adapt
    only the top this many transformer layers (0 = all), so back-propagation stops below them.
    ``schedule_epochs`` (0 = ``epochs``) is the cosine's horizon; ``max_minutes`` (0 = none) a time budget.
    Early stopping and the kept epoch follow validation macro-AUPRC. ``cpu_autocast``: bfloat16 autocast of
    a float32 model on CPU (``auto``: when the CPU has native bfloat16).
    """
    import torch
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    pooling = resolve_pooling(cfg.pooling, backbone.family)
    max_length = min(int(cfg.max_length), backbone.max_length) if cfg.max_length else backbone.max_length
    y_train = np.asarray(y_train, dtype=np.float32)
    device = distributed.rank_device(torch.device(backbone.device))

    net = backbone.model
    checkpointing = cfg.gradient_checkpointing
    if checkpointing in ("on", True) or (checkpointing == "auto" and device.type == "cuda"):
        enable = getattr(net, "activation_checkpointing_enable", None) or net.gradient_checkpointing_enable
        enable()
    targets = list(cfg.target_modules) if cfg.target_modules else default_target_modules(net, backbone.family)
    n_layers = int(getattr(net.config, "num_hidden_layers", 0) or 0)
    layers = list(range(max(n_layers - cfg.lora_layers, 0), n_layers)) if cfg.lora_layers and n_layers else None
    lcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", layers_to_transform=layers)
    with warnings.catch_warnings():  # peft probes a property transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(net, lcfg)
    backbone.model = model
    train = model_inputs(backbone, train_docs, cfg.unit, max_length, cfg.stride, fields)
    val = model_inputs(backbone, val_docs, cfg.unit, max_length, cfg.stride, fields) if val_docs else None
    head = torch.nn.Linear(train.width, y_train.shape[1]).to(device)
    torch.nn.init.zeros_(head.bias)
    result = FineTuneResult(backbone, head, pooling, max_length, int(cfg.stride), targets, unit=cfg.unit,
                            fields=list(fields or []), autocast=wants_cpu_autocast(backbone, cfg.cpu_autocast))
    task = LoraTask(result, model, train, y_train, val, y_val, cfg, device)
    rule = StopRule(cfg.epochs, cfg.patience, lambda r: r.get("val_macro_auprc", -r["train_loss"]),
                    max_minutes=cfg.max_minutes)
    run = train_loop(task, rule, stage="fine-tune notes", progress=progress, started=started,
                     describe=lambda r: f"loss {r['train_loss']:.4f} val AUPRC {r.get('val_macro_auprc', float('nan')):.3f}")
    task.restore_best()
    result.history, result.best_epoch = run.history, max(run.best_epoch, 0)
    if val is not None and run.best_epoch > 0:
        result.best_val_macro_auprc = run.history[run.best_epoch - 1]["val_macro_auprc"]
        result.best_val_macro_f1 = run.history[run.best_epoch - 1]["val_macro_f1"]
    model.eval()
    head.eval()
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
    result = train_lora(backbone, cfg, [docs[i] for i in train], y[train], [docs[i] for i in val], y[val],
                        fields=fields, progress=progress)
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
