"""Validate a MEDS folder with the ``meds`` package and print what is in it, per code family.

Runs under the MEDS ETL's virtual environment (polars, meds), called by convert_mimic4_demo.sh; its output
is what tests/data/mimic4_demo_meds/PROVENANCE.md quotes. A code family is the code's first ``//`` part
(``HOSPITAL_ADMISSION``, ``MEDS_BIRTH``), or its first two for ``LAB//RESULT`` and ``DIAGNOSIS//ICD``.

Usage: python describe_meds.py MEDS_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq


def validate(root: Path) -> None:
    """Raise unless every data shard and metadata table matches its MEDS 0.4 schema."""
    shards = sorted((root / "data").rglob("*.parquet"))
    if not shards:
        sys.exit(f"{root / 'data'}: no Parquet shard")
    for fp in shards:
        meds.DataSchema.validate(pq.read_table(fp))
    meds.CodeMetadataSchema.validate(pq.read_table(root / "metadata" / "codes.parquet"))
    meds.SubjectSplitSchema.validate(pq.read_table(root / "metadata" / "subject_splits.parquet"))
    json.loads((root / "metadata" / "dataset.json").read_text())


def describe(root: Path) -> None:
    """Print the shards, columns, per-family counts, splits and dataset metadata."""
    pl.Config.set_tbl_rows(100)
    pl.Config.set_tbl_cols(-1)
    pl.Config.set_tbl_width_chars(160)
    pl.Config.set_fmt_str_lengths(60)
    data = pl.read_parquet(root / "data" / "**" / "*.parquet", include_file_paths="shard")
    print(f"{data.height} events, {data['subject_id'].n_unique()} subjects, "
          f"{data['hadm_id'].drop_nulls().n_unique()} hadm_id")
    print("columns:", ", ".join(f"{k} {v}" for k, v in data.drop("shard").schema.items()))
    print("all-null columns:", ", ".join(c for c in data.columns if data[c].null_count() == data.height))
    parts = pl.col("code").str.split("//")
    two = pl.col("code").str.starts_with("LAB//") | pl.col("code").str.starts_with("DIAGNOSIS//")
    family = pl.when(two).then(parts.list.slice(0, 2).list.join("//")).otherwise(parts.list.first())
    print(data.with_columns(family=family).group_by("family").agg(
        events=pl.len(), subjects=pl.col("subject_id").n_unique(), codes=pl.col("code").n_unique(),
        hadm_ids=pl.col("hadm_id").drop_nulls().n_unique(), null_hadm=pl.col("hadm_id").null_count(),
        null_time=pl.col("time").null_count(), numeric=pl.col("numeric_value").is_not_null().sum(),
        text=pl.col("text_value").is_not_null().sum()).sort("family"))
    splits = pl.read_parquet(root / "metadata" / "subject_splits.parquet")
    print(splits.group_by("split").agg(subjects=pl.len()).sort("split"))
    codes = pl.read_parquet(root / "metadata" / "codes.parquet")
    print(f"codes.parquet: {codes.height} codes, columns {codes.columns}, "
          f"{codes['description'].is_not_null().sum()} with a description, "
          f"{codes['parent_codes'].list.len().fill_null(0).gt(0).sum()} with parent codes")
    print("dataset.json:", (root / "metadata" / "dataset.json").read_text().strip())


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    validate(folder)
    print(f"{folder}: valid MEDS {meds.__version__} (data shards, codes, subject_splits, dataset.json)")
    describe(folder)
