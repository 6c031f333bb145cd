"""Lay out the MIMIC-IV demo as the raw input the MIMIC-IV MEDS ETL (MIMIC_IV_MEDS 0.2.0) reads, offline.

Runs under the ETL's own virtual environment (it needs polars and MEDS_extract), called by
convert_mimic4_demo.sh. The demo ships six ``hosp/`` tables; they are linked as they are. Every other event
table the ETL's ``event_configs.yaml`` reads is written as an EMPTY Parquet file with the MIMIC-IV columns
and the dtypes the ETL's own CSV inference gives the real tables (ids Int64, measurements Float64, times
String): an empty CSV would be all-String, and its ``hadm_id`` would not join the demo's Int64
``hosp/admissions``. The dictionary tables it lacks (d_hcpcs, d_icd_procedures, icu/d_items) and the
mimic-code concept maps the ETL would download are written as header-only CSVs (the ETL reads metadata CSVs
as all-String), unless ``--loinc-map`` gives a real ``d_labitems_to_loinc.csv`` to link instead. The script
then checks that every event table and column the spec reads is present.

Usage: python stage_demo_input.py DEMO_DIR STAGE_DIR [--loinc-map FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

I, F, S = pl.Int64, pl.Float64, pl.String

DEMO_TABLES = ("admissions", "d_icd_diagnoses", "d_labitems", "diagnoses_icd", "labevents", "patients")

# MIMIC-IV v2.2 columns of the tables the demo lacks, with the dtypes polars infers on the real files.
EMPTY_TABLES: dict[str, dict[str, pl.DataType]] = {
    "hosp/drgcodes": {"subject_id": I, "hadm_id": I, "drg_type": S, "drg_code": I, "description": S,
                      "drg_severity": I, "drg_mortality": I},
    "hosp/emar": {"subject_id": I, "hadm_id": I, "emar_id": S, "emar_seq": I, "poe_id": S, "pharmacy_id": I,
                  "enter_provider_id": S, "charttime": S, "medication": S, "event_txt": S, "scheduletime": S,
                  "storetime": S},
    "hosp/prescriptions": {"subject_id": I, "hadm_id": I, "pharmacy_id": I, "poe_id": S, "poe_seq": I,
                           "order_provider_id": S, "starttime": S, "stoptime": S, "drug_type": S, "drug": S,
                           "formulary_drug_cd": S, "gsn": S, "ndc": S, "prod_strength": S, "form_rx": S,
                           "dose_val_rx": S, "dose_unit_rx": S, "form_val_disp": S, "form_unit_disp": S,
                           "doses_per_24_hrs": F, "route": S},
    "hosp/hcpcsevents": {"subject_id": I, "hadm_id": I, "chartdate": S, "hcpcs_cd": S, "seq_num": I,
                         "short_description": S},
    "hosp/omr": {"subject_id": I, "chartdate": S, "seq_num": I, "result_name": S, "result_value": S},
    "hosp/pharmacy": {"subject_id": I, "hadm_id": I, "pharmacy_id": I, "poe_id": S, "starttime": S,
                      "stoptime": S, "medication": S, "proc_type": S, "status": S, "entertime": S,
                      "verifiedtime": S, "route": S, "frequency": S, "disp_sched": S, "infusion_type": S,
                      "sliding_scale": S, "lockout_interval": S, "basal_rate": F, "one_hr_max": S,
                      "doses_per_24_hrs": F, "duration": F, "duration_interval": S, "expiration_value": I,
                      "expiration_unit": S, "expirationdate": S, "dispensation": S, "fill_quantity": S},
    "hosp/procedures_icd": {"subject_id": I, "hadm_id": I, "seq_num": I, "chartdate": S, "icd_code": S,
                            "icd_version": I},
    "hosp/transfers": {"subject_id": I, "hadm_id": I, "transfer_id": I, "eventtype": S, "careunit": S,
                       "intime": S, "outtime": S},
    "icu/icustays": {"subject_id": I, "hadm_id": I, "stay_id": I, "first_careunit": S, "last_careunit": S,
                     "intime": S, "outtime": S, "los": F},
    "icu/chartevents": {"subject_id": I, "hadm_id": I, "stay_id": I, "caregiver_id": I,
                        "charttime": S, "storetime": S, "itemid": I, "value": S, "valuenum": F,
                        "valueuom": S, "warning": I},
    "icu/procedureevents": {"subject_id": I, "hadm_id": I, "stay_id": I, "caregiver_id": I,
                            "starttime": S, "endtime": S, "storetime": S, "itemid": I, "value": F,
                            "valueuom": S, "location": S, "locationcategory": S, "orderid": I,
                            "linkorderid": I, "ordercategoryname": S, "ordercategorydescription": S,
                            "patientweight": F, "isopenbag": I, "continueinnextdept": I,
                            "statusdescription": S, "originalamount": F, "originalrate": F},
    "icu/inputevents": {"subject_id": I, "hadm_id": I, "stay_id": I, "caregiver_id": I, "starttime": S,
                        "endtime": S, "storetime": S, "itemid": I, "amount": F, "amountuom": S, "rate": F,
                        "rateuom": S, "orderid": I, "linkorderid": I, "ordercategoryname": S,
                        "secondaryordercategoryname": S, "ordercomponenttypedescription": S,
                        "ordercategorydescription": S, "patientweight": F, "totalamount": F,
                        "totalamountuom": S, "isopenbag": I, "continueinnextdept": I, "statusdescription": S,
                        "originalamount": F, "originalrate": F},
    "icu/outputevents": {"subject_id": I, "hadm_id": I, "stay_id": I, "caregiver_id": I, "charttime": S,
                         "storetime": S, "itemid": I, "value": F, "valueuom": S},
}

# Dictionary tables the demo lacks, header only: the ETL reads metadata CSVs as all-String, which the spec's
# expressions rely on (``$icd_version == "9"``), so these must not be typed Parquet.
EMPTY_DICTIONARIES = {
    "hosp/d_hcpcs": "code,category,long_description,short_description",
    "hosp/d_icd_procedures": "icd_code,icd_version,long_title",
    "icu/d_items": ("itemid,label,abbreviation,linksto,category,unitname,param_type,lownormalvalue,"
                    "highnormalvalue"),
}
# Header of mimic-code's concept_map/d_labitems_to_loinc.csv in its OMOP layout, the one whose columns the
# spec reads (``itemid (omop_source_code)``, label, omop_concept_name, omop_vocabulary_id, omop_concept_code).
LOINC_MAP_COLUMNS = (
    "itemid (omop_source_code)", "label", "fluid", "category", "valueuom", "omop_concept_id",
    "omop_concept_name", "omop_domain_id", "omop_vocabulary_id", "omop_concept_class_id",
    "omop_standard_concept", "omop_concept_code", "sssom_author_id", "sssom_reviewer_id",
    "sssom_subject_source_version", "common_vocabulary_version", "sssom_mapping_tool",
    "sssom_mapping_tool_version", "sssom_mapping_date", "sssom_confidence", "sssom_comment",
    "labevents_row_count",
)
# The ICU concept maps: only the columns the spec reads (their rows would only feed ICU codes' parents).
ICU_MAPS = ("meas_chartevents_main", "proc_datetimeevents", "proc_itemid", "inputevents_to_rxnorm",
            "outputevents_to_loinc")
ICU_MAP_HEADER = "itemid (omop_source_code),label,omop_concept_name,omop_vocabulary_id,omop_concept_code"


def stage(demo: Path, out: Path, loinc_map: Path | None) -> list[str]:
    """Write the staged input under ``out``; return one line per supplied (non-demo) file."""
    supplied = []
    (out / "hosp").mkdir(parents=True, exist_ok=True)
    (out / "icu").mkdir(parents=True, exist_ok=True)
    for name in DEMO_TABLES:
        src = demo / "hosp" / f"{name}.csv.gz"
        if not src.is_file():
            sys.exit(f"{src}: missing; DEMO_DIR must be the MIMIC-IV demo folder (with hosp/{name}.csv.gz)")
        (out / "hosp" / src.name).symlink_to(src.resolve())
    for prefix, schema in EMPTY_TABLES.items():
        pl.DataFrame(schema=schema).write_parquet(out / f"{prefix}.parquet")
        supplied.append(f"{prefix}.parquet: empty, {len(schema)} columns")
    for prefix, header in EMPTY_DICTIONARIES.items():
        (out / f"{prefix}.csv").write_text(header + "\n")
        supplied.append(f"{prefix}.csv: header only")
    if loinc_map is not None:
        (out / "d_labitems_to_loinc.csv").symlink_to(loinc_map.resolve())
        supplied.append(f"d_labitems_to_loinc.csv: {loinc_map}")
    else:
        (out / "d_labitems_to_loinc.csv").write_text(",".join(LOINC_MAP_COLUMNS) + "\n")
        supplied.append("d_labitems_to_loinc.csv: header only")
    for name in ICU_MAPS:
        (out / f"{name}.csv").write_text(ICU_MAP_HEADER + "\n")
        supplied.append(f"{name}.csv: header only")
    return supplied


def check(out: Path) -> None:
    """Fail unless every event table and column the MIMIC-IV spec reads is in the staged input."""
    from MEDS_extract.config import MessyConfig

    for prefix, cols in MessyConfig.load("MIMIC-IV").needed_source_columns().items():
        files = [*out.glob(f"{prefix}.csv*"), *out.glob(f"{prefix}.parquet")]
        if len(files) != 1:
            sys.exit(f"{out / prefix}: expected one source file, found {files}")
        have = set(pl.scan_csv(files[0]).collect_schema() if files[0].suffix != ".parquet"
                   else pl.read_parquet_schema(files[0]))
        missing = sorted(set(cols or ()) - have)
        if missing:
            sys.exit(f"{files[0]}: the spec reads column(s) {missing} that the staged file lacks")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--loinc-map", type=Path, default=None)
    args = ap.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"{args.out}: not empty")
    for line in stage(args.demo, args.out, args.loinc_map):
        print("supplied", line)
    check(args.out)


if __name__ == "__main__":
    main()
