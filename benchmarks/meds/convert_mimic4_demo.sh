#!/usr/bin/env bash
# Rebuild tests/data/mimic4_demo_meds/ from the real MIMIC-IV demo with the real MIMIC-IV MEDS ETL, offline.
#
#   benchmarks/meds/convert_mimic4_demo.sh [DEMO_DIR] [DEST_DIR]
#
# DEMO_DIR defaults to ../shared/data/mimic-iv-demo, DEST_DIR to tests/data/mimic4_demo_meds. Environment:
#   MEDS_ETL_VENV  the ETL's virtual environment (default /tmp/medfuse-meds-etl-venv; created if absent,
#                  pinned by requirements-etl.txt; kept apart from .venv, whose polars/hydra it would change)
#   MEDS_ETL_WORK  the work folder for the staged input and the ETL's output tree (default: a new temp folder)
#   LOINC_MAP      optional: a real mimic-code d_labitems_to_loinc.csv to stage instead of the header-only one
# Steps: create the venv -> stage the demo plus empty stand-ins for the tables and concept maps it lacks
# (stage_demo_input.py) -> meds-extract-run with do_download=false -> copy the MEDS folder (data shards,
# codes.parquet, subject_splits.parquet, dataset.json) into DEST_DIR -> validate and describe it.
# DEST_DIR's PROVENANCE.md is left as it is. See tests/data/mimic4_demo_meds/PROVENANCE.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DEMO=$(cd "${1:-$ROOT/../shared/data/mimic-iv-demo}" && pwd)
DEST=${2:-$ROOT/tests/data/mimic4_demo_meds}
VENV=${MEDS_ETL_VENV:-/tmp/medfuse-meds-etl-venv}
WORK=${MEDS_ETL_WORK:-$(mktemp -d -t medfuse-meds-etl.XXXXXX)}

if [ ! -x "$VENV/bin/meds-extract-run" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$HERE/requirements-etl.txt"
fi

rm -rf "$WORK/raw" "$WORK/out"
"$VENV/bin/python" "$HERE/stage_demo_input.py" "$DEMO" "$WORK/raw" ${LOINC_MAP:+--loinc-map "$LOINC_MAP"}

# The pipeline runner spawns its stages as MEDS_transform-stage from PATH, hence the venv first on PATH.
PATH="$VENV/bin:$PATH" meds-extract-run spec=MIMIC-IV dataset_key=demo do_download=false \
  input_dir="$WORK/raw" output_dir="$WORK/out" > "$WORK/etl.log" 2>&1 \
  || { tail -n 40 "$WORK/etl.log"; echo "meds-extract-run failed; full log: $WORK/etl.log" >&2; exit 1; }

rm -rf "$DEST/data" "$DEST/metadata"
mkdir -p "$DEST/metadata"
(cd "$WORK/out" && find data -name '*.parquet' -not -path '*/.*' -exec cp --parents {} "$DEST" \;)
cp "$WORK/out/metadata/"{codes.parquet,subject_splits.parquet,dataset.json} "$DEST/metadata/"

"$VENV/bin/python" "$HERE/describe_meds.py" "$DEST"
du -sh "$DEST"
echo "ETL log and intermediate stages: $WORK"
