"""Shared fixtures: the real MIMIC demo extracts, cohorts prepared from them, tiny offline language models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data() -> Path:
    """The public MIMIC-III / MIMIC-IV demo extracts (``../shared/data`` beside the checkout)."""
    path = Path(os.environ.get("MEDFUSE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (path / "mimic-iii-demo").is_dir():
        raise RuntimeError(f"real demo data not found at {path}; set MEDFUSE_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def mimic3_demo() -> Path:
    return shared_data() / "mimic-iii-demo"


@pytest.fixture(scope="session")
def mimic4_demo() -> Path:
    return shared_data() / "mimic-iv-demo"


@pytest.fixture(scope="session")
def mimic3_cohort(mimic3_demo, tmp_path_factory) -> Path:
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort

    out = tmp_path_factory.mktemp("cohorts") / "mimic3"
    prepare_cohort(mimic3_demo, out, load_config(overrides={"prepare": {"source": "mimic3"}}).prepare)
    return out


@pytest.fixture(scope="session")
def mimic4_cohort(mimic4_demo, tmp_path_factory) -> Path:
    from medfuse.config import load_config
    from medfuse.data.prepare import prepare_cohort

    out = tmp_path_factory.mktemp("cohorts") / "mimic4"
    prepare_cohort(mimic4_demo, out, load_config(overrides={"prepare": {"source": "mimic4"}}).prepare)
    return out


SENTENCES = [
    "patient with congestive heart failure and shortness of breath",
    "edema of the legs, elevated bnp, reduced ejection fraction",
    "fever, productive cough and infiltrate on chest x-ray consistent with pneumonia",
    "acute kidney injury with elevated creatinine and low urine output",
    "history of hypertension, diabetes mellitus and hyperlipidemia",
    "medications on admission: furosemide, lisinopril, metoprolol, aspirin",
    "abnormal labs: creatinine 2.4 mg/dl (high); hemoglobin 8.1 g/dl (low)",
    "chief complaint: chest pain radiating to the left arm",
    "history of present illness: 67 year old woman admitted with dyspnea",
    "past medical history: chronic obstructive pulmonary disease, atrial fibrillation",
]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """pytest runs two workers on two cores: one intra-op thread each avoids oversubscription."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _corpus() -> list[str]:
    return SENTENCES * 20


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT with a written-out WordPiece vocabulary (the words of the test sentences); limit 64 tokens."""
    from tiny_config import write_tiny_bert

    words = " ".join(SENTENCES).replace(",", " ").replace(":", " ").replace("(", " ").replace(")", " ").split()
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), words)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A 2-layer Llama causal LM with a byte-level BPE tokenizer (BOS added, no pad token)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny_llama")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>"]
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   model_max_length=128, padding_side="left")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      bos_token_id=bos, eos_token_id=tok.token_to_id("</s>"), pad_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path
