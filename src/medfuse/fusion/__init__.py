"""medfuse.fusion: the MEDFuse fusion model, its baselines and the vCLUB mutual-information estimator."""

from medfuse.fusion.club import CLUBEstimator
from medfuse.fusion.model import KINDS, FusionConfig, ModelOutput, build_model, kronecker_tokens

__all__ = ["KINDS", "CLUBEstimator", "FusionConfig", "ModelOutput", "build_model", "kronecker_tokens"]
