"""medfuse: multimodal disease prediction from lab tests and clinical notes."""

__version__ = "0.1.0"
