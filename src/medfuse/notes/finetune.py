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

from medfuse.data.cohort import Cohort
from medfuse.notes.backbone import Backbone, cpu_native_bf16, folder_identity, load_backbone, resolve_pooling
from medfuse.notes.embed import (
    DEFAULT_STRIDE,
    NoteEmbedder,
    combine_windows,
    encode_windows,
    tokenize_windows,
)
from medfuse.notes.text import DEFAULT_TEMPLATE, build_texts
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
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_macro_f1: float | None = None
    autocast: bool = False

    def embedder(self, normalize: bool = True) -> NoteEmbedder:
        """Embed with the in-memory fine-tuned model (same vectors as ``embed-notes --adapter`` on the saved run)."""
        return NoteEmbedder.from_backbone(self.backbone, self.pooling, self.max_length, self.stride, normalize)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Head probabilities ``[N, n_labels]``."""
        import torch

        with cpu_autocast(self.autocast):
            x = self.embedder(normalize=False)._compute(texts, no_progress, "predict")
        with torch.inference_mode():
            w = self.head.weight.detach().float().cpu().numpy()
            b = self.head.bias.detach().float().cpu().numpy()
        return 1.0 / (1.0 + np.exp(-(x @ w.T + b)))


def macro_f1(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y.astype(int), (prob >= threshold).astype(int), average="macro", zero_division=0))


def train_lora(backbone: Backbone, train_texts: list[str], y_train: np.ndarray, val_texts: list[str] | None = None,
               y_val: np.ndarray | None = None, *, pooling: str | None = None, max_length: int | None = None,
               stride: int = DEFAULT_STRIDE, rank: int = 8, alpha: float = 16.0, dropout: float = 0.05,
               target_modules: list[str] | None = None, epochs: int = 5, batch_size: int = 8, lr: float = 2e-4,
               head_lr: float = 1e-3, weight_decay: float = 0.0, patience: int = 2, pos_weight: bool = True,
               gradient_checkpointing: str | bool = "auto", autocast: str | bool = "auto", seed: int = 0,
               progress: ProgressFn | None = None) -> FineTuneResult:
    """Train LoRA adapters + a linear head in place on ``backbone`` (which becomes a peft model).

    ``autocast``: bfloat16 autocast of a float32 model on CPU (``auto``: when the CPU has native bfloat16).
    """
    import torch
    from peft import LoraConfig, get_peft_model

    progress = progress or no_progress
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pooling = resolve_pooling(pooling, backbone.family)
    max_length = min(int(max_length), backbone.max_length) if max_length else backbone.max_length
    y_train = np.asarray(y_train, dtype=np.float32)
    device = backbone.device
    gpu = str(device).startswith("cuda")

    net = backbone.model
    if gradient_checkpointing in ("on", True) or (gradient_checkpointing == "auto" and gpu):
        enable = getattr(net, "activation_checkpointing_enable", None) or net.gradient_checkpointing_enable
        enable()
    targets = list(target_modules) if target_modules else default_target_modules(net, backbone.family)
    lcfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    with warnings.catch_warnings():  # peft probes a property transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(net, lcfg)
    backbone.model = model
    head = torch.nn.Linear(backbone.hidden_size, y_train.shape[1]).to(device)
    torch.nn.init.zeros_(head.bias)

    lora_params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": lora_params, "lr": lr}, {"params": head.parameters(), "lr": head_lr}],
                            weight_decay=weight_decay)
    if pos_weight:
        pos = y_train.sum(0)
        pw = torch.tensor(np.clip((len(y_train) - pos) / np.maximum(pos, 1), 1.0, 100.0), dtype=torch.float32)
    else:
        pw = None
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pw.to(device) if pw is not None else None)

    ids, doc = tokenize_windows(backbone.tokenizer, train_texts, max_length, stride)
    windows_of: list[list[int]] = [[] for _ in train_texts]
    for w, d in enumerate(doc):
        windows_of[d].append(w)
    pad = backbone.tokenizer.pad_token_id
    steps_per_epoch = max(1, -(-len(train_texts) // batch_size))
    total_steps = epochs * steps_per_epoch

    result = FineTuneResult(backbone, head, pooling, max_length, int(stride), targets,
                            autocast=wants_cpu_autocast(backbone, autocast))
    best_f1, best_state, bad, step = -1.0, None, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        head.train()
        order = rng.permutation(len(train_texts))
        losses = []
        for start in range(0, len(order), batch_size):
            docs = order[start:start + batch_size]
            wins = [w for d in docs for w in windows_of[d]]
            local = torch.tensor([j for j, d in enumerate(docs) for _ in windows_of[d]], device=device)
            weights = torch.tensor([len(ids[w]) for w in wins], device=device, dtype=torch.float32)
            with cpu_autocast(result.autocast):
                vecs = encode_windows(model, [ids[w] for w in wins], pad, pooling, device).float()
            pooled = combine_windows(vecs, weights, local, len(docs))
            logits = head(pooled)
            loss = loss_fn(logits, torch.from_numpy(y_train[docs]).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora_params + list(head.parameters()), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            progress("fine-tune notes", step / total_steps)
        model.eval()
        head.eval()
        record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if val_texts:
            record["val_macro_f1"] = macro_f1(np.asarray(y_val), result.predict_proba(list(val_texts)))
        result.history.append(record)
        score = record.get("val_macro_f1", -record["train_loss"])
        if score > best_f1:
            best_f1, bad, result.best_epoch = score, 0, epoch
            best_state = ({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                          {k: v.detach().clone() for k, v in head.state_dict().items()})
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, v in best_state[0].items():
                params[n].copy_(v)
        head.load_state_dict(best_state[1])
    result.best_val_macro_f1 = float(best_f1) if val_texts else None
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


def head_probabilities(run_dir: str | Path, texts: list[str], label_names: list[str], cfg: Any = None) -> np.ndarray:
    """The fine-tuned model's own predictions ``[N, labels]`` (the paper's "fine-tuned language model"
    baseline): its linear head on the un-normalised pooled vectors of the adapter; a row without text
    (``""``) gets the head's bias alone."""
    from medfuse.notes.pipeline import embedder_from_config

    weight, bias, labels = load_head(run_dir)
    if labels and labels != list(label_names):
        raise ValueError(f"{run_dir}: the head predicts {labels}, not {list(label_names)}")
    from medfuse.config import NotesConfig

    cfg = (cfg or NotesConfig()).model_copy(update={"normalize": False})
    rows = [i for i, t in enumerate(texts) if t]
    x = np.zeros((len(texts), weight.shape[1]), np.float32)
    if rows:
        embedder = embedder_from_config(cfg, model=None, adapter=run_dir)
        x[rows] = embedder.embed([texts[i] for i in rows])
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
    backbone = load_backbone(model_name, cfg.device, cfg.dtype, training=True)
    progress("load model", 1.0)
    result = train_lora(
        backbone, [nt.texts[i] for i in train], y[train], [nt.texts[i] for i in val], y[val],
        pooling=cfg.pooling, max_length=cfg.max_length or None, stride=cfg.stride, rank=cfg.lora_rank,
        alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=cfg.target_modules or None,
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
        "labels": cohort.label_names,
        "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                 "target_modules": result.target_modules},
        "training": {k: getattr(cfg, k) for k in ("epochs", "train_batch_size", "lr", "head_lr", "weight_decay",
                                                  "patience", "pos_weight", "gradient_checkpointing", "seed")},
        "cpu_autocast": result.autocast,
        "device": str(backbone.device),
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "train_admissions": len(train),
        "val_admissions": len(val),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_val_macro_f1": result.best_val_macro_f1,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    save_finetuned(result, out, meta)
    meta["out"] = str(Path(out))
    return meta
