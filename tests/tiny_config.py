"""Config text shared by the tests that run whole commands with tiny models (demo, compare, train)."""

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
