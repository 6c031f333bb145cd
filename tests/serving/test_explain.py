"""Explanations: their format, and that their scores are what deleting the item does to the probability."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from medfuse.serving.explain import Explainer, explain_batch
from medfuse.serving.predict import Predictor
from medfuse.serving.raw_records import records_from_raw
from medfuse.serving.records import PatientRecord

SECTIONS = {"chief_complaint": "cough", "present_illness": "She reports a cough for two days.\nNo fever.",
            "past_history": "gout\nosteoporosis\nessential hypertension", "admission_medications": "Aspirin 81 mg PO DAILY"}


@pytest.fixture(scope="module")
def predictor(served):
    root, _ = served
    return Predictor.load(root / "model", cache_dir=root / "cache")


@pytest.fixture(scope="module")
def records(served):
    """The first 12 test-split admissions of the served cohort, as records read from its raw files."""
    root, cfg = served
    ids = pq.read_table(root / "run" / "predictions_test.parquet").column("hadm_id").to_pylist()[:12]
    return [PatientRecord.model_validate(r)
            for r in records_from_raw(root / "raw", "mimic4", ids, cfg.prepare.lab_hours_before_admission)]


def _number(value) -> float | None:
    """A lab value as the model reads it: censored values (">150") at their bound."""
    try:
        return float(str(value).strip().lstrip("<>="))
    except ValueError:
        return None


def _without(record: PatientRecord, **update) -> PatientRecord:
    return PatientRecord.model_validate({**record.model_dump(), **update})


def test_explanations_give_the_positive_labels_top_items_with_signed_scores(predictor, records):
    out = predictor.predict(records, explain=True)
    json.dumps(out)
    fields = set(predictor.lines.fields)
    explained = 0
    for result, record in zip(out, records, strict=True):
        expl = result["explanations"]
        assert set(expl) == {n for n, positive in result["decisions"].items() if positive}
        values: dict[int, set] = {}
        for lab in record.labs:
            values.setdefault(int(lab.test), set()).add(lab.value)
        for name, e in expl.items():
            explained += 1
            assert e["probability"] == pytest.approx(result["probabilities"][name], abs=1e-6)
            assert 1 <= len(e["labs"]) <= 5 and 1 <= len(e["note_lines"]) <= 5
            for items in (e["labs"], e["note_lines"]):
                scores = [it["score"] for it in items]
                assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
            for lab in e["labs"]:
                assert list(lab) == ["test", "label", "value", "unit", "score"]
                assert lab["test"] in values  # only measured tests; the value is one the record holds
                assert any(_number(v) == pytest.approx(lab["value"], rel=1e-6) for v in values[lab["test"]])
            for line in e["note_lines"]:
                assert line["field"] in fields
                assert line["field"] == "lab_text" or line["text"] in "\n".join(record.note)
    assert explained >= 10


def test_line_scores_are_the_drop_of_removing_the_line_and_the_line_that_matters_most_ranks_first(
        predictor, records):
    """Each note line's score equals p(record) - p(record without that line), the latter predicted through
    ``predict`` on an edited record, for every label; so the line whose removal lowers a positive label's
    probability most (the line most tied to it in this record) is the explanation's first line."""
    record = _without(records[0], note=None, sections=SECTIONS)
    note = [(f, line) for f, text in SECTIONS.items() for line in text.split("\n")]
    removed = [_without(record, sections={**SECTIONS, f: "\n".join(x for x in SECTIONS[f].split("\n") if x != line)})
               for f, line in note]
    results = predictor.predict([record, *removed])
    full, labels = results[0]["probabilities"], predictor.label_names
    drop = {line: np.array([full[n] - r["probabilities"][n] for n in labels])
            for (_, line), r in zip(note, results[1:], strict=True)}

    prepared = predictor.prepare([record])
    explainer = Explainer(predictor, prepared)
    s = explainer.scores(0)
    scored = {explainer.lines.texts[n]: column for n, column in zip(s.line_index, s.lines.T, strict=True)
              if explainer.lines.field[n] != predictor.lines.fields.index("lab_text")}
    assert set(scored) == set(drop)
    for line, column in scored.items():
        np.testing.assert_allclose(column, drop[line], atol=1e-5, err_msg=line)

    positive = explain_batch(predictor, prepared, predictor.probabilities(prepared), k=None)[0]
    assert positive
    for name, e in positive.items():
        j = labels.index(name)
        top = max(drop, key=lambda line: drop[line][j])
        first = next(it for it in e["note_lines"] if it["field"] != "lab_text")
        assert first["text"] == top and first["score"] == pytest.approx(drop[top][j], abs=1e-5)
    print(f"{len(positive)} positive label(s); their most tied lines: "
          + ", ".join(f"{n}: {e['note_lines'][0]['text']!r} {e['note_lines'][0]['score']:+.3f}"
                      for n, e in positive.items()))


def _drop_test(record: PatientRecord, itemid: int) -> PatientRecord:
    return _without(record, labs=[x.model_dump() for x in record.labs if int(x.test) != itemid])


def test_deleting_the_top_lab_lowers_p_more_than_deleting_the_least(predictor, records):
    """Per positive label, the record without the top-scored test's rows, predicted again, against the record
    without the lowest-scored test's rows. Deleting a test's rows also deletes its line of the abnormal-lab
    text, which its score leaves in place, so the comparison is made over all positives; a test without
    such a line scores exactly what deleting its rows does."""
    prepared = predictor.prepare(records[:6])
    prob = predictor.probabilities(prepared)
    explained = explain_batch(predictor, prepared, prob, k=None)
    cases, edited = [], []
    for i, (record, expl) in enumerate(zip(records[:6], explained, strict=True)):
        for name, e in expl.items():
            edited += [_drop_test(record, lab["test"]) for lab in (e["labs"][0], e["labs"][-1])]
            cases.append((i, predictor.label_names.index(name)))
    p = predictor.probabilities(predictor.prepare(edited)).reshape(len(cases), 2, -1)
    drops = np.array([prob[i, j] - p[c, :, j] for c, (i, j) in enumerate(cases)])
    wins = float((drops[:, 0] > drops[:, 1]).mean())
    print(f"{len(cases)} positives: mean drop deleting the top test {drops[:, 0].mean():+.4f}, the least "
          f"attributed {drops[:, 1].mean():+.4f}; the top test's deletion lowers p more in {wins:.0%}")
    assert len(cases) >= 8 and wins >= 0.9 and drops[:, 0].mean() > drops[:, 1].mean() + 0.02

    explainer = Explainer(predictor, prepared)
    s = explainer.scores(0)
    lab_text = prepared.texts.values[0]["lab_text"] or ""
    plain = [(t, explainer.test_meta[t][0]) for t in s.tests if explainer.test_meta[t][1] not in lab_text][:6]
    p = predictor.probabilities(predictor.prepare([_drop_test(records[0], itemid) for _, itemid in plain]))
    column = {t: n for n, t in enumerate(s.tests)}
    for row, (t, _) in enumerate(plain):
        np.testing.assert_allclose(s.labs[:, column[t]], prob[0] - p[row], atol=1e-5)
    assert len(plain) >= 3


def test_integrated_gradients_add_up_to_the_change_from_the_median_baseline(predictor, records):
    """Completeness: per label, the tests' integrated gradients sum to p(record) - p(every measured test at
    its training median), the baseline predicted here through the ordinary prediction path."""
    import torch

    prepared = predictor.prepare(records[:2])
    explainer = Explainer(predictor, prepared)
    labels = np.arange(5)
    d = prepared.data
    with torch.no_grad():
        pooled, tokens = predictor.labs.model.embed(torch.zeros(d.lab_x.shape), torch.from_numpy(d.lab_observed))
    values = d.lab_values.copy()
    values[..., :-1] = 0.0
    baseline = dataclasses.replace(prepared, data=dataclasses.replace(
        d, lab_x=np.zeros_like(d.lab_x), lab_values=values, lab_pooled=pooled.numpy(), lab_tokens=tokens.numpy()))
    change = predictor.probabilities(prepared) - predictor.probabilities(baseline)
    for i in range(2):
        s = explainer.scores(i, "integrated_gradients", labels)
        assert s.labs.shape == (len(predictor.label_names), len(explainer.tests(i)))
        print(f"record {i}: |sum of attributions - change| at most {np.abs(s.labs[labels].sum(1) - change[i, labels]).max():.1e}")
        np.testing.assert_allclose(s.labs[labels].sum(1), change[i, labels], atol=2e-3)
        assert not s.labs[5:].any()
    assert np.abs(change).max() > 0.01


def test_report_section_shows_explained_test_patients(served):
    from medfuse.runs.report import explained_section

    root, _ = served
    page = explained_section(root / "run", json.loads((root / "run" / "run.json").read_text()))
    assert page.startswith("<h2>Explained test patients</h2>")
    assert page.count("<h3>Admission ") == 3 and page.count("<table class='labbars'") >= 3
    assert "background:rgba(214,39,40," in page and "Not available" not in page
