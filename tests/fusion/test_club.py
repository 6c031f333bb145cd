"""vCLUB estimator: likelihood, the all-pairs identity, and the bound on dependent vs independent data."""

from __future__ import annotations

import math

import pytest
import torch

from medfuse.fusion import CLUBEstimator
from medfuse.fusion.club import penalty


def _fit(y_of, steps: int = 200, seed: int = 0) -> CLUBEstimator:
    """Train q(y|x) by maximum likelihood on fresh batches from the sampler."""
    torch.manual_seed(seed)
    club = CLUBEstimator(4, 4, hidden=32)
    opt = torch.optim.Adam(club.parameters(), lr=1e-2)
    for _ in range(steps):
        x = torch.randn(128, 4)
        loss = club.learning_loss(x, y_of(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return club


def test_log_likelihood_is_the_gaussian_density():
    torch.manual_seed(0)
    club = CLUBEstimator(3, 2, hidden=8, logvar_bound=2.0)
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    mu, logvar = club.gaussian(x)
    ref = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(y).sum(-1).mean()
    assert torch.allclose(club.log_likelihood(x, y), ref, atol=1e-5)
    assert torch.allclose(club.learning_loss(x, y), -ref, atol=1e-5)
    assert logvar.abs().max() <= 2.0


def test_full_form_equals_all_pairs():
    torch.manual_seed(0)
    club = CLUBEstimator(3, 2, hidden=8)
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    mu, logvar = club.gaussian(x)
    ll = -0.5 * ((y[None, :, :] - mu[:, None, :]) ** 2 / logvar.exp()[:, None, :]).sum(-1)  # [i, j]
    brute = (ll.diagonal() - ll.mean(1)).mean()
    assert torch.allclose(club.upper_bound(x, y, sample=False), brute, atol=1e-5)


def test_sampled_form_is_a_permutation_estimate():
    torch.manual_seed(0)
    club = CLUBEstimator(3, 2, hidden=8)
    x, y = torch.randn(4000, 3), torch.randn(4000, 2)
    full = club.upper_bound(x, y, sample=False)
    sampled = torch.stack([club.upper_bound(x, y, sample=True) for _ in range(20)]).mean()
    assert abs(sampled.item() - full.item()) < 0.05
    assert torch.equal(club(x, y, sample=False), full)


def test_bound_is_high_for_dependent_samples():
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    club = _fit(lambda x: x @ w + 0.1 * torch.randn_like(x))
    torch.manual_seed(2)
    x = torch.randn(2048, 4)
    y = x @ w + 0.1 * torch.randn_like(x)
    with torch.no_grad():
        full, sampled = club.upper_bound(x, y, sample=False), club.upper_bound(x, y, sample=True)
    assert full.item() > 0.5 and sampled.item() > 0.5
    assert math.isfinite(full.item())


def test_bound_is_near_zero_for_independent_samples():
    club = _fit(lambda x: torch.randn_like(x))
    torch.manual_seed(3)
    x, y = torch.randn(4096, 4), torch.randn(4096, 4)
    with torch.no_grad():
        full = club.upper_bound(x, y, sample=False)
        sampled = club.upper_bound(x, y, sample=True)
    assert abs(full.item()) < 0.1
    assert abs(sampled.item()) < 0.1


@pytest.mark.parametrize("sample", [True, False])
def test_bound_gradients_reach_inputs(sample):
    club = CLUBEstimator(3, 2, hidden=8)
    x, y = torch.randn(10, 3, requires_grad=True), torch.randn(10, 2, requires_grad=True)
    club.upper_bound(x, y, sample=sample).backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0


def test_penalty_floors_negative_estimates_at_zero():
    est = torch.tensor([-2.5, -0.1, 1.5], requires_grad=True)
    out = penalty(est)
    assert out.tolist() == [0.0, 0.0, 1.5]
    out.sum().backward()
    assert est.grad.tolist() == [0.0, 0.0, 1.0]  # no gradient pushes an estimate further below zero


def test_penalty_without_floor_passes_negative_estimates_through():
    est = torch.tensor([-2.5, -0.25, 1.5], requires_grad=True)
    out = penalty(est, floor=False)
    assert out.tolist() == [-2.5, -0.25, 1.5]
    out.sum().backward()
    assert est.grad.tolist() == [1.0, 1.0, 1.0]
