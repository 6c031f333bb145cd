"""vCLUB: the variational Contrastive Log-ratio Upper Bound of mutual information (Cheng et al., ICML 2020).

``q(y | x) = N(y; mu(x), diag(exp(logvar(x))))`` with two small MLPs; ``logvar`` ends in ``tanh`` and is
scaled to ``(-logvar_bound, logvar_bound)`` (the reference code's Tanh output layer is ``logvar_bound=1``).

* The estimator is fitted by maximising ``log_likelihood(x, y)`` on *detached* samples (its own optimizer).
* The upper bound ``I(x; y) <= E_p(x,y)[log q(y|x)] - E_p(x)p(y)[log q(y|x)]`` is then minimised by the
  model producing ``x`` and ``y``. Per row ``i`` the positive term uses ``(x_i, y_i)``; the negative term
  uses either one random partner ``y_perm(i)`` (``sample=True``, the paper's vCLUB-S) or the mean over all
  ``y_j`` (``sample=False``). The full form is O(N^2) as written but computed exactly in O(N d) via
  ``mean_j (y_j - mu_i)^2 = Var_j(y) + (mean_j y - mu_i)^2``.
  Both terms share ``mu(x_i)`` and ``logvar(x_i)``, so the log-variance and 2*pi constants cancel.

All values are in nats, averaged over rows and summed over the ``y`` dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def penalty(estimate: Tensor, floor: bool = True) -> Tensor:
    """The MI term the main model minimises: the vCLUB estimate, floored at zero (``floor=False``: as is).

    Mutual information is never negative; a negative estimate only means ``q`` lags behind the
    features, and following it would train them to fool ``q`` rather than to share less.
    """
    return estimate.clamp_min(0.0) if floor else estimate


class CLUBEstimator(nn.Module):
    def __init__(self, x_dim: int, y_dim: int, hidden: int, logvar_bound: float = 1.0):
        super().__init__()
        self.logvar_bound = logvar_bound
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh())

    def gaussian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``mu`` [N, y_dim] and ``logvar`` [N, y_dim] (bounded by ``logvar_bound``) of ``q(y | x)``."""
        return self.mu(x), self.logvar_bound * self.logvar(x)

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean over rows of ``log q(y_i | x_i)`` (full Gaussian log-density, summed over dimensions)."""
        mu, logvar = self.gaussian(x)
        ll = -0.5 * ((y - mu) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi))
        return ll.sum(-1).mean()

    def learning_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Negative log-likelihood, the estimator's own training loss (detach ``x`` and ``y`` first)."""
        return -self.log_likelihood(x, y)

    def upper_bound(self, x: Tensor, y: Tensor, sample: bool = True) -> Tensor:
        """vCLUB estimate of ``I(x; y)`` (scalar): sampled O(N) form or the all-pairs form."""
        mu, logvar = self.gaussian(x)
        inv_var = (-logvar).exp()
        positive = -0.5 * ((y - mu) ** 2 * inv_var).sum(-1)
        if sample:
            perm = torch.randperm(y.shape[0], device=y.device)
            negative = -0.5 * ((y[perm] - mu) ** 2 * inv_var).sum(-1)
        else:  # mean_j (y_j - mu_i)^2 without the [N, N, d] tensor
            y_mean, y_var = y.mean(0), y.var(0, unbiased=False)
            negative = -0.5 * ((y_var + (y_mean - mu) ** 2) * inv_var).sum(-1)
        return (positive - negative).mean()

    def forward(self, x: Tensor, y: Tensor, sample: bool = True) -> Tensor:
        return self.upper_bound(x, y, sample)
