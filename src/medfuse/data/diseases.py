"""The ten target diseases, defined as ICD-9 / ICD-10 code-prefix groups in a TOML file."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Disease:
    """One label: a snake_case name, a display title and ICD code prefixes per version."""

    name: str
    title: str
    icd9: tuple[str, ...]
    icd10: tuple[str, ...]

    def label_sql(self) -> str:
        """SQL aggregate over diagnosis rows (``code`` normalised, ``version`` 9 or 10; the rows
        :func:`medfuse.data.rules.create_labels` uses): 1 where one matches."""
        parts = [f"(version = {v} AND regexp_matches(code, '^({'|'.join(p)})'))"
                 for v, p in ((9, self.icd9), (10, self.icd10)) if p]
        return f"max(CASE WHEN {' OR '.join(parts)} THEN 1 ELSE 0 END)::TINYINT AS {self.name}"


def load_diseases(path: str | Path | None = None) -> list[Disease]:
    """Read a diseases TOML (the shipped ``configs/diseases.toml`` when ``path`` is empty)."""
    if path:
        text, where = Path(path).read_text(), str(path)
    else:
        text, where = resources.files("medfuse.resources").joinpath("diseases.toml").read_text(), "diseases.toml"
    tables = tomllib.loads(text).get("disease", [])
    if not tables:
        raise ValueError(f"{where}: no [[disease]] tables")
    diseases = []
    for i, t in enumerate(tables):
        try:
            name, icd9, icd10 = t["name"], t.get("icd9", []), t.get("icd10", [])
        except KeyError:
            raise ValueError(f"{where}: disease #{i + 1} has no 'name'") from None
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{where}: disease name {name!r} must be snake_case")
        codes = [c.replace(".", "").upper() for c in (*icd9, *icd10)]
        bad = [c for c in codes if not re.fullmatch(r"[A-Z0-9]{1,7}", c)]
        if bad or not codes:
            raise ValueError(f"{where}: disease {name!r} has invalid or no ICD prefixes {bad}")
        diseases.append(
            Disease(
                name=name,
                title=t.get("title", name),
                icd9=tuple(c.replace(".", "").upper() for c in icd9),
                icd10=tuple(c.replace(".", "").upper() for c in icd10),
            )
        )
    if len({d.name for d in diseases}) != len(diseases):
        raise ValueError(f"{where}: duplicate disease names")
    return diseases

