"""Fusion inputs assembled from a real cohort (the MIMIC-III demo)."""

import numpy as np

from medfuse.data.cohort import LAB_AGGREGATES, Cohort
from medfuse.training.inputs import lab_value_channels


def test_lab_value_channels_follow_the_given_key_order(mimic3_cohort):
    cohort = Cohort(mimic3_cohort)
    rare, common = cohort.lab_keys[-1], cohort.lab_keys[0]  # least / most often measured selected test
    keys = [rare, "lab_not_in_this_cohort", common]
    v = lab_value_channels(cohort, keys)
    assert v.shape == (len(cohort.hadm_ids), 3, 5) and v.dtype == np.float32
    for slot, key in ((0, rare), (2, common)):
        col = cohort.lab_keys.index(key)
        for a, agg in enumerate(LAB_AGGREGATES):
            z = cohort.lab_values(None, agg)[:, col]
            np.testing.assert_allclose(v[:, slot, a], np.nan_to_num(z, nan=0.0))
        measured = ~np.isnan(cohort.lab_values(None, "last")[:, col])
        np.testing.assert_array_equal(v[:, slot, 4], measured)
    assert 0 < v[:, 0, 4].sum() < len(v)  # the rare test: admissions with and without it
    assert not v[:, 1].any()  # a test the cohort lacks: never measured
    spread = v[:, 0, 3] - v[:, 0, 2]
    assert (spread >= 0).all() and (spread > 0).any()  # max >= min, and some admissions vary
