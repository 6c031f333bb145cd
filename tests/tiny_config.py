"""Tiny models and config text shared by the tests that run whole commands with them (demo, compare, train)."""

from __future__ import annotations

from pathlib import Path


def tiny_stages(tiny_bert: Path) -> str:
    """``[labs]`` and ``[notes]`` sections for a tiny MLTM and the tiny BERT, without the note cache."""
    return f"""
[labs]
epochs = 2
d_model = 32
encoder_layers = 2
[notes]
model = "{tiny_bert}"
cache = false
"""


def write_tiny_bert(path: Path, words: list[str]) -> Path:
    """A 2-layer BERT (hidden 32, limit 64 tokens) whose WordPiece vocabulary is written out: the characters,
    their ``##`` continuations and ``words``. Trained by ``tokenizers``, the vocabulary breaks ties differently
    from run to run, and processes (pytest-xdist workers, torchrun ranks) must load the same model."""
    import string

    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *sorted(set(words))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    BertModel(cfg).save_pretrained(path)
    return path
