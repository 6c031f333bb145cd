"""The paper's scale on one GPU: LoRA fine-tuning and embedding with an 8B Llama-architecture note model.

No 8B weights can be downloaded here, so the model is built from a ``LlamaConfig`` with Llama-3-8B's real
shape (32 layers, hidden 4096, MLP 14336, 32 heads / 8 KV heads, vocabulary 128,256) and random weights,
saved as a local model folder (safetensors) with a byte-level BPE tokenizer trained offline on the
synthetic notes. The code path and the memory behaviour are those of real weights. Measured, through
medfuse's own code (``load_backbone``, ``train_lora``, ``NoteEmbedder``):

* LoRA fine-tuning in bfloat16 with gradient checkpointing: peak GPU memory, training tokens/s;
* embedding (``NoteEmbedder``, bfloat16): peak GPU memory, tokens/s;
* 4-bit loading through bitsandbytes where it installs: GPU memory after loading, forward tokens/s.

    python benchmarks/bench_llm_gpu.py            # the 8B shape; needs a CUDA GPU with >= 40 GB and ~20 GB disk
    python benchmarks/bench_llm_gpu.py --tiny     # the same path with a 2-layer model, on CPU if no GPU (a check)

Writes benchmarks/results/llm_gpu.json (llm_gpu_tiny.json with --tiny), the device named.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import CACHE, offline, save

offline()

LLAMA3_8B = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
             "rope_theta": 500000.0, "rms_norm_eps": 1e-5}
TINY = {"vocab_size": 4096, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}


def notes_and_labels(admissions: int) -> tuple[list[str], np.ndarray]:
    """Input texts and labels of a synthetic cohort (seed 0, the development seed), admissions with text."""
    from medfuse.config import load_config
    from medfuse.data import Cohort
    from medfuse.data.prepare import prepare_cohort
    from medfuse.data.synth import generate
    from medfuse.notes.text import build_texts

    root = CACHE / f"llm-gpu-{admissions}"
    if not (root / "cohort" / "manifest.json").exists():
        generate(root / "raw", "mimic3", admissions, seed=0)
        prepare_cohort(root / "raw", root / "cohort", load_config().prepare, overwrite=True)
    cohort = Cohort(root / "cohort")
    nt = build_texts(cohort)
    keep = np.flatnonzero(nt.has_text)
    return [nt.texts[i] for i in keep], cohort.labels()[keep]


def build_model_folder(out: Path, shape: dict, texts: list[str], device: str) -> Path:
    """A Llama folder of ``shape`` with random bfloat16 (GPU) or float32 (CPU) weights and an offline tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=min(shape["vocab_size"], 32000), special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   model_max_length=shape["max_position_embeddings"], padding_side="left")
    fast.save_pretrained(out)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**shape, bos_token_id=bos, eos_token_id=eos, pad_token_id=None))
    finally:
        torch.set_default_dtype(before)
    model.save_pretrained(out, safe_serialization=True)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def _gpu_peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def _reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def token_count(folder: Path, texts: list[str], max_length: int) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return int(sum(min(len(ids), max_length) for ids in tok(texts)["input_ids"]))


def measure_lora(folder: Path, texts: list[str], y: np.ndarray, device: str, max_length: int, batch: int) -> dict:
    from medfuse.config import NotesConfig
    from medfuse.notes.backbone import load_backbone
    from medfuse.notes.finetune import train_lora

    _reset(device)
    backbone = load_backbone(folder, device, "bfloat16" if device.startswith("cuda") else "float32", training=True)
    t0 = time.perf_counter()
    cfg = NotesConfig(unit="text", epochs=1, train_batch_size=batch, max_length=max_length, lora_rank=16,
                      lora_alpha=32, gradient_checkpointing="on", lr=2e-4, head_lr=1e-3, seed=0)
    result = train_lora(backbone, cfg, texts, y)
    seconds = time.perf_counter() - t0
    tokens = token_count(folder, texts, max_length)
    out = {"texts": len(texts), "tokens": tokens, "seconds": round(seconds, 1),
           "train_tokens_per_s": round(tokens / seconds, 1), "peak_gpu_gib": _gpu_peak_gib(device),
           "lora": {"rank": 16, "alpha": 32, "target_modules": result.target_modules}, "batch_size": batch,
           "max_length": max_length, "gradient_checkpointing": True}
    del backbone, result
    return out


def measure_embedding(folder: Path, texts: list[str], device: str, max_length: int) -> dict:
    from medfuse.notes.embed import NoteEmbedder

    _reset(device)
    emb = NoteEmbedder(folder, max_length=max_length, cache_dir=False, device=device,
                       dtype="bfloat16" if device.startswith("cuda") else "float32")
    emb.embed(texts[:8])  # load and warm up
    t0 = time.perf_counter()
    emb.embed(texts)
    seconds = time.perf_counter() - t0
    tokens = emb.last_stats["tokens"]
    return {"texts": len(texts), "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "peak_gpu_gib": _gpu_peak_gib(device),
            "pooling": emb.pooling}


def measure_4bit(folder: Path, texts: list[str], device: str, max_length: int) -> dict:
    """Loading in 4 bits (NF4, bfloat16 compute) and a forward pass over the texts, when bitsandbytes works."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        return {"available": False, "reason": f"bitsandbytes not installed ({e})"}
    if not device.startswith("cuda"):
        return {"available": False, "reason": "4-bit loading needs a CUDA GPU"}
    import torch
    from transformers import AutoModel, AutoTokenizer, BitsAndBytesConfig

    from medfuse.notes.embed import encode_windows, make_batches, tokenize_windows

    _reset(device)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModel.from_pretrained(folder, quantization_config=q, device_map={"": device}).eval()
    loaded = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    tok = AutoTokenizer.from_pretrained(folder)
    ids, _ = tokenize_windows(tok, texts, max_length, 0)
    lengths = np.array([len(x) for x in ids])
    t0 = time.perf_counter()
    with torch.inference_mode():
        for rows in make_batches(lengths, 16384, 64):
            encode_windows(model, [ids[i] for i in rows], tok.pad_token_id or 0, "last", device)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"available": True, "gpu_gib_after_load": loaded, "peak_gpu_gib": _gpu_peak_gib(device),
            "tokens": int(lengths.sum()), "tokens_per_s": round(float(lengths.sum()) / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: checks the path, on CPU without a GPU")
    ap.add_argument("--admissions", type=int, default=600, help="synthetic admissions the texts come from")
    ap.add_argument("--train-texts", type=int, default=256)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.tiny and device == "cpu":
        raise SystemExit("the 8B shape needs a CUDA GPU; use --tiny to check the code path on CPU")
    shape = TINY if args.tiny else LLAMA3_8B
    texts, y = notes_and_labels(args.admissions)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        t0 = time.perf_counter()
        folder = build_model_folder(Path(tmp) / "llama", shape, texts, device)
        built = round(time.perf_counter() - t0, 1)
        n = min(args.train_texts, len(texts))
        result = {
            "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
            "torch": torch.__version__,
            "shape": "tiny (2 layers)" if args.tiny else "Llama-3-8B (random weights)",
            "config": shape,
            "parameters_billion": round(_params(shape) / 1e9, 3),
            "build_and_save_seconds": built,
            "lora_bf16_gradient_checkpointing": measure_lora(folder, texts[:n], y[:n], device, args.max_length,
                                                             args.batch_size),
            "embedding_bf16": measure_embedding(folder, texts[:n], device, args.max_length),
            "load_4bit": measure_4bit(folder, texts[:n], device, args.max_length),
        }
    print(result)
    print(save("llm_gpu_tiny" if args.tiny else "llm_gpu", result))


def _params(shape: dict) -> int:
    """Parameters of a Llama body + LM head of ``shape``."""
    h, m, layers, v = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * m + 2 * h
    return layers * per_layer + 2 * v * h + h


if __name__ == "__main__":
    main()
