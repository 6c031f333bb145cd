"""Per-admission input text: template, presence masks, TF-IDF baseline, config defaults."""

from __future__ import annotations

import numpy as np
import pytest

from medfuse.notes.text import DEFAULT_TEMPLATE, build_texts, iter_texts, render, validate_template


def test_render_drops_lines_with_empty_placeholders():
    text = render(DEFAULT_TEMPLATE, {"chief_complaint": "dyspnea", "present_illness": None, "past_history": "  ",
                                     "admission_medications": "aspirin", "lab_text": "Abnormal labs: K 6.1 (high)."})
    assert text == "Chief complaint: dyspnea\nMedications on admission: aspirin\nAbnormal labs: K 6.1 (high)."
    assert render(DEFAULT_TEMPLATE, {}) == ""


def test_template_rejects_leaking_or_unknown_sections():
    with pytest.raises(ValueError, match="discharge_diagnosis"):
        validate_template("Diagnosis: {discharge_diagnosis}\n{lab_text}")
    with pytest.raises(ValueError, match="no placeholder"):
        validate_template("just text")
    validate_template("{lab_text} | {chief_complaint}")


def test_build_texts_masks_and_order(cohort_dir):
    nt = build_texts(cohort_dir)
    assert len(nt) == 60 and nt.hadm_ids[0] == 100 and list(nt.split[:1]) == ["train"]
    # rows 0 and 1: no note but lab text -> text is the lab text alone
    assert nt.texts[0].startswith("Abnormal labs: Creatinine") and nt.has_text[0] and not nt.has_note[0]
    # row 2: neither -> missing, empty text (never embedded)
    assert nt.texts[2] == "" and not nt.has_text[2] and not nt.has_note[2] and not nt.has_lab_text[2]
    assert nt.has_text[3:].all() and nt.has_note[3:].all()
    assert "Chief complaint: shortness of breath" in nt.texts[3] and nt.texts[3].endswith("(high).")
    # custom template: lab text first, no medications
    custom = build_texts(cohort_dir, "{lab_text}\nCC: {chief_complaint}")
    assert custom.texts[3].startswith("Abnormal labs") and "CC: shortness of breath" in custom.texts[3]
    assert "furosemide" not in " ".join(custom.texts)
    # static template text does not make a missing admission present
    static = build_texts(cohort_dir, "Admission record\n{chief_complaint}\n{lab_text}")
    assert static.texts[2] == "" and not static.has_text[2]
    assert static.texts[0].startswith("Admission record\nAbnormal labs")


def test_texts_in_chunks_equal_the_whole_cohort(mimic4_cohort, cohort_dir, tmp_path):
    """``iter_texts`` (what embed-notes reads a chunk at a time) gives build_texts' admissions in order, on
    the real MIMIC-IV demo cohort (lab texts) and on notes stored in another order than the cohort's."""
    import shutil

    import pyarrow.parquet as pq

    for cohort in (mimic4_cohort, cohort_dir):
        whole = build_texts(cohort)
        starts, parts = zip(*iter_texts(cohort, DEFAULT_TEMPLATE, chunk=13), strict=True)
        assert starts == tuple(range(0, len(whole), 13)) and sum(len(p) for p in parts) == len(whole)
        assert [t for p in parts for t in p.texts] == whole.texts
        assert [v for p in parts for v in p.values] == whole.values
        for mask in ("hadm_ids", "has_text", "has_note", "has_lab_text", "split"):
            np.testing.assert_array_equal(np.concatenate([getattr(p, mask) for p in parts]), getattr(whole, mask))
    assert build_texts(mimic4_cohort).has_lab_text.sum() > 100

    shuffled = tmp_path / "shuffled"
    shutil.copytree(cohort_dir, shuffled)
    notes = pq.read_table(shuffled / "notes.parquet")
    pq.write_table(notes.take(np.arange(len(notes))[::-1]), shuffled / "notes.parquet")
    again = [t for _, p in iter_texts(shuffled, DEFAULT_TEMPLATE, chunk=8) for t in p.texts]
    assert again == build_texts(cohort_dir).texts


def test_tfidf_fits_on_train_only(cohort_dir):
    from medfuse.notes.tfidf import tfidf_cohort

    _, x, missing, model = tfidf_cohort(cohort_dir)
    assert x.shape[0] == 60 and missing.sum() == 1 and missing[2]
    assert x[2].nnz == 0
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    assert np.allclose(norms[~missing], 1.0, atol=1e-5)
    # the vocabulary comes from training texts only
    nt = build_texts(cohort_dir)
    analyze = model.vectorizer.build_analyzer()
    train_terms = {g for t, s in zip(nt.texts, nt.split, strict=True) if s == "train" for g in analyze(t)}
    assert model.vocabulary and set(model.vocabulary) <= train_terms


def test_notes_config_defaults_match_library():
    from medfuse.config import NotesConfig, load_config

    cfg = load_config().notes
    assert cfg == NotesConfig()
    assert cfg.template == DEFAULT_TEMPLATE
    with pytest.raises(Exception, match="pooling"):
        load_config(overrides={"notes": {"pooling": "max"}})
