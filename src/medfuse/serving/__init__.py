"""Use a trained model: the bundle (export, card), prediction for new patients, explanations, the service."""

from medfuse.serving.bundle import BundleError, export_bundle, read_bundle
from medfuse.serving.predict import Predictor
from medfuse.serving.records import LabResult, NoteSections, PatientRecord

__all__ = ["BundleError", "LabResult", "NoteSections", "PatientRecord", "Predictor", "export_bundle", "read_bundle"]
