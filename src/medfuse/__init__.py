"""medfuse: multimodal disease prediction from lab tests and clinical notes."""

import os

# Spinning OpenMP worker threads make PyTorch's small CPU kernels up to ~40x slower as soon as
# another process shares the cores (measured: 7.0 s vs 0.17 s per MLTM training step on 2 busy
# cores). Must be set before torch is first imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"
