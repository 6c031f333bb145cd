"""Use a trained model: the bundle (export, card), prediction for new patients, explanations, the service."""

import os

# Note lines come in ever new padded shapes, and oneDNN keeps a compiled kernel per shape (1,024 by default,
# tens of MB each time a shape is new): a long prediction run or a service would grow by about 30 MB per 1,000
# patients. A few kept kernels hold memory flat at no measured speed cost. Set before torch first uses oneDNN.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")

from medfuse.serving.bundle import BundleError, read_bundle
from medfuse.serving.predict import Predictor
from medfuse.serving.records import LabResult, NoteSections, PatientRecord

__all__ = ["BundleError", "LabResult", "NoteSections", "PatientRecord", "Predictor", "read_bundle"]
