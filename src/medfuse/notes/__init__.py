"""Clinical-note embeddings from language models, LoRA fine-tuning and a TF-IDF baseline (docs/notes.md).

Importing this package is cheap: torch and transformers load only when a model is needed.
"""

from medfuse.notes.embed import NoteEmbedder, default_cache_dir
from medfuse.notes.embeddings import embed_cohort, load_note_embeddings, write_note_embeddings
from medfuse.notes.text import DEFAULT_TEMPLATE, NoteTexts, build_texts

__all__ = [
    "DEFAULT_TEMPLATE",
    "NoteEmbedder",
    "NoteTexts",
    "build_texts",
    "default_cache_dir",
    "embed_cohort",
    "load_note_embeddings",
    "write_note_embeddings",
]
