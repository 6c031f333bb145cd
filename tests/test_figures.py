"""The figures in README.md and the docs are those of benchmarks/results/*.json.

benchmarks/render_readme.py renders every figure-bearing fragment (between `<!-- rendered by ... -->` and
`<!-- end -->` markers) from the JSON; here each file must equal its rendering, a changed JSON value must change
the rendering, and the figures a review once found stale are checked one by one against their JSON.
"""

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"


@pytest.fixture(scope="module")
def rr():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("render_readme")
    finally:
        sys.path.remove(str(BENCH))


def _json(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _fragment(rr, path: str, name: str, flat: bool = True) -> str:
    """The text of fragment ``name`` in ``path``; ``flat``: with its line breaks (wrapped prose) as spaces."""
    text = rr.fragment(name, (ROOT / path).read_text())
    return " ".join(text.split()) if flat else text


def _min_s(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s"


def test_readme_and_docs_show_what_the_json_renders(rr):
    stale = rr.stale(ROOT, RESULTS)
    assert not stale, (f"{', '.join(stale)} differ from what benchmarks/results/*.json renders: run "
                       f"`python benchmarks/render_readme.py` (check: `--check` shows the differences)")


def test_every_fragment_is_marked_exactly_once(rr):
    for path, fragments in rr.FRAGMENTS.items():
        text = (ROOT / path).read_text()
        for name in fragments:
            marker = f"<!-- rendered by benchmarks/render_readme.py: {name} -->"
            assert text.count(marker) == 1, f"{path}: {text.count(marker)} markers for '{name}'"


def test_the_figures_once_found_stale_equal_their_json(rr):
    prep = _json("mimic4_scale")["stages"]["prepare"]
    peak, spill = f"{prep['peak_rss_mib'] / 1024:.2f} GiB", f"{prep['temp_directory_peak_bytes'] / 2**30:.2f} GiB"
    for path, name in (("docs/scaling.md", "prepare-peak"), ("README.md", "scale")):
        text = _fragment(rr, path, name)
        assert peak in text and spill in text, (path, name)
    assert peak in _fragment(rr, "docs/configuration.md", "memory-limit")
    assert spill in _fragment(rr, "docs/configuration.md", "spill")
    scaling = (ROOT / "docs/scaling.md").read_text()
    assert "5.11 GiB" not in scaling and "9.3 GiB" not in scaling

    demo = _json("demo")
    training = _fragment(rr, "docs/training.md", "demo-time")
    assert _min_s(demo["wall_seconds"]) in training and "About 4 min" not in (ROOT / "docs/training.md").read_text()
    perf = _fragment(rr, "README.md", "performance")
    assert f"a {demo['comparison_rows']}-row comparison" in perf
    assert f"**{_min_s(demo['wall_seconds'])}**" in perf
    if not demo["quiet_machine"]:
        assert "not a quiet-machine figure" in perf and "not a quiet-machine figure" in training
    if "quiet_machine_seconds" not in demo:  # a quiet-machine time is shown only when a JSON holds one
        assert "5 min 34 s" not in (ROOT / "README.md").read_text()

    p = _json("prepare")["prepare"]
    t = p["stage_seconds"]
    breakdown = _fragment(rr, "README.md", "prepare-time")
    assert f"{t['total']:.1f} s inside the call" in breakdown
    assert f"classifies every LABEVENTS row {t['labs: read']:.1f} s" in breakdown
    assert f"({p['cpu_seconds']:.1f} CPU-s in {p['seconds']:.1f} s)" in breakdown


def test_the_notes_defaults_table_is_the_config(rr):
    from medfuse.config import NotesConfig

    table = _fragment(rr, "docs/notes.md", "notes-config", flat=False)
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| `")}
    defaults = NotesConfig().model_dump()
    for key, value in defaults.items():
        (row,) = [r for first, r in rows.items() if f"`{key}`" in first]
        keys = [k.strip(" `|") for k in row.split(" | ")[0].split(",")]
        shown = row.split(" | ")[1].split(", ")[keys.index(key)] if key != "template" else "see above"
        assert shown == rr._toml_value(value) or key == "template", (key, shown, value)
    assert rr._toml_value(NotesConfig().lora_rank) == "16" and rr._toml_value(1e-3) == "1e-3"


def _copy_tree(rr, tmp_path: Path) -> tuple[Path, Path]:
    root, results = tmp_path / "repo", tmp_path / "results"
    for path in rr.FRAGMENTS:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, root / path)
    shutil.copytree(RESULTS, results, ignore=shutil.ignore_patterns("*.md"))
    return root, results


def test_a_changed_json_value_changes_the_figures(rr, tmp_path, capsys):
    root, results = _copy_tree(rr, tmp_path)
    scale = json.loads((results / "mimic4_scale.json").read_text())
    scale["stages"]["prepare"]["peak_rss_mib"] = 6000.0
    scale["summary"]["max_peak_rss_mib"] = 6000.0
    (results / "mimic4_scale.json").write_text(json.dumps(scale))
    demo = json.loads((results / "demo.json").read_text())
    demo.update(comparison_rows=15, wall_seconds=333.0, quiet_machine=True)
    (results / "demo.json").write_text(json.dumps(demo))

    assert rr.main(["--check", "--root", str(root), "--results", str(results)]) == 1
    assert "docs/configuration.md" in capsys.readouterr().err
    assert rr.main(["--root", str(root), "--results", str(results)]) == 0
    for path in ("README.md", "docs/scaling.md", "docs/configuration.md"):
        assert "5.86 GiB" in (root / path).read_text(), path
    readme = (root / "README.md").read_text()
    assert "a 15-row comparison" in readme and "**5 min 33 s**" in readme and "target 6 min, met" in readme
    assert "not a quiet-machine figure" not in (root / "docs/training.md").read_text()
    assert rr.main(["--check", "--root", str(root), "--results", str(results)]) == 0
    # only the fragments changed: the text around them is the same
    before, after = (ROOT / "README.md").read_text(), readme
    assert before.split("<!-- rendered by")[0] == after.split("<!-- rendered by")[0]
    assert before.rsplit("<!-- end -->", 1)[1] == after.rsplit("<!-- end -->", 1)[1]


def test_check_fails_on_a_figure_edited_by_hand(rr, tmp_path, capsys):
    root, results = _copy_tree(rr, tmp_path)
    assert rr.main(["--check", "--root", str(root), "--results", str(results)]) == 0
    doc = root / "docs/configuration.md"
    peak = _json("mimic4_scale")["stages"]["prepare"]["peak_rss_mib"] / 1024
    doc.write_text(doc.read_text().replace(f"{peak:.2f} GiB under", "5.1 GiB under"))
    assert rr.main(["--check", "--root", str(root), "--results", str(results)]) == 1
    out = capsys.readouterr()
    assert "docs/configuration.md" in out.err and "+| `memory_limit`" in out.out


def test_markers_block_inline_and_missing(rr):
    from _common import replace_marked

    m = "<!-- rendered by s.py: {} -->"
    text = f"a\n{m.format('t')}\nold\n<!-- end -->\nb {m.format('x')}1.0 GiB<!-- end --> c\n"
    text = replace_marked(text, "s.py", "t", "| new |\n")
    text = replace_marked(text, "s.py", "x", "2.0 GiB")
    assert text == f"a\n{m.format('t')}\n| new |\n<!-- end -->\nb {m.format('x')}2.0 GiB<!-- end --> c\n"
    with pytest.raises(ValueError, match="0 marked spans"):
        replace_marked(text, "s.py", "missing", "x")
    with pytest.raises(ValueError, match="2 marked spans"):
        replace_marked(text + text, "s.py", "x", "x")


def test_lora_early_stopping_is_described_as_it_is_coded():
    from typer.main import get_command

    from medfuse.cli import app

    (row,) = [line for line in (ROOT / "docs/protocol.md").read_text().splitlines()
              if line.startswith("| early stopping")]
    assert "validation macro-AUPRC (LoRA)" in row and "macro-F1" not in row
    (epochs,) = [p for p in get_command(app).commands["finetune-notes"].params if p.name == "epochs"]
    assert "macro-AUPRC" in epochs.help and "macro-F1" not in epochs.help
