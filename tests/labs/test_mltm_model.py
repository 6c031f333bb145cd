"""The MLTM model: masking, targets, leakage and shape contracts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medfuse.labs.model import MLTM, MLTMConfig, masked_mse, random_masking


def _batch(n: int = 64, length: int = 12, p_obs: float = 0.7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, generator=g)
    observed = torch.rand(n, length, generator=g) < p_obs
    observed[0] = False  # an admission without any lab
    observed[1] = False
    observed[1, 3] = True  # ... and one with a single lab
    observed[:, 5] = False  # a test missing everywhere in the batch
    return x.masked_fill(~observed, float("nan")), observed


def _model(length: int = 12, **kw) -> MLTM:
    torch.manual_seed(0)
    return MLTM(MLTMConfig(n_tests=length, d_model=32, encoder_layers=2, decoder_layers=1, heads=4, **kw)).eval()


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.2])
def test_masking_hides_exact_share_of_observed_only(ratio):
    _, observed = _batch(n=200)
    visible = random_masking(observed, ratio, torch.Generator().manual_seed(1))
    hidden = observed & ~visible
    n_obs = observed.sum(1).numpy()
    expected_hidden = np.floor(ratio * n_obs + 0.5).astype(int)
    assert (hidden.sum(1).numpy() == expected_hidden).all()
    assert not (visible & ~observed).any(), "a missing test became visible"
    assert not (hidden & ~observed).any(), "a missing test became a target"
    assert expected_hidden.sum() > 0 and (n_obs - expected_hidden > 0).any()


def test_masking_is_seeded_and_random():
    _, observed = _batch(n=200)
    a = random_masking(observed, 0.75, torch.Generator().manual_seed(3))
    b = random_masking(observed, 0.75, torch.Generator().manual_seed(3))
    c = random_masking(observed, 0.75, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # every observed position is visible sometimes and hidden sometimes over many draws
    gen = torch.Generator().manual_seed(5)
    freq = torch.stack([random_masking(observed, 0.75, gen) for _ in range(200)]).float().mean(0)
    rows = observed.sum(1) >= 4
    assert abs(float(freq[observed & rows[:, None]].mean()) - 0.25) < 0.03


def test_hidden_and_missing_values_never_reach_the_encoder():
    model = _model()
    x, observed = _batch()
    visible = random_masking(observed, 0.75, torch.Generator().manual_seed(0))
    hidden = observed & ~visible
    assert hidden.sum() > 50
    x2 = x.clone()
    x2[hidden] = x2[hidden] + 100.0  # change every hidden value
    x2[~observed] = 1e6  # and put numbers where nothing was measured
    with torch.no_grad():
        cls1, enc1, _, _ = model.encode(x, visible)
        cls2, enc2, _, _ = model.encode(x2, visible)
        pred1, _, _ = model(x, observed, visible=visible)
        pred2, _, _ = model(x2, observed, visible=visible)
    assert torch.equal(cls1, cls2) and torch.equal(enc1, enc2) and torch.equal(pred1, pred2)
    assert torch.isfinite(pred1).all()
    # sanity: a visible value does change the encoder output
    x3 = x.clone()
    x3[visible] += 1.0
    with torch.no_grad():
        cls3, _, _, _ = model.encode(x3, visible)
    assert not torch.allclose(cls1, cls3)


def test_same_generator_seed_gives_same_forward():
    model = _model()
    x, observed = _batch()
    with torch.no_grad():
        p1, v1, h1 = model(x, observed, 0.75, torch.Generator().manual_seed(9))
        p2, v2, h2 = model(x, observed, 0.75, torch.Generator().manual_seed(9))
    assert torch.equal(v1, v2) and torch.equal(h1, h2) and torch.equal(p1, p2)
    assert torch.equal(h1, observed & ~v1)


def test_loss_counts_hidden_values_only():
    x, observed = _batch()
    visible = random_masking(observed, 0.75, torch.Generator().manual_seed(0))
    hidden = observed & ~visible
    pred = torch.randn(x.shape)
    loss, n = masked_mse(pred, x, hidden)
    expected = ((pred - x)[hidden] ** 2).mean()
    assert n == int(hidden.sum())
    assert math.isclose(float(loss), float(expected), rel_tol=1e-6)
    pred2 = pred.clone()
    pred2[~hidden] = 1e3  # predictions elsewhere (visible or missing) do not count
    assert float(masked_mse(pred2, x, hidden)[0]) == float(loss)


def test_gradients_flow_only_from_hidden_targets_and_are_finite():
    model = _model().train()
    x, observed = _batch()
    pred, _, hidden = model(x, observed, 0.75, torch.Generator().manual_seed(0))
    loss, _ = masked_mse(pred, x, hidden)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # the identity embedding of the test missing everywhere gets no gradient through its value
    assert float(model.value_w.grad[5].abs().sum()) == 0.0


def test_shapes_and_inference_without_masking():
    length, n = 12, 64
    model = _model(length)
    x, observed = _batch(n=n, length=length)
    with torch.no_grad():
        pooled, tokens = model.embed(x, observed)
        rec = model.reconstruct(x, observed)
    assert pooled.shape == (n, 32) and tokens.shape == (n, length, 32) and rec.shape == (n, length)
    assert torch.isfinite(pooled).all() and torch.isfinite(tokens).all() and torch.isfinite(rec).all()
    assert (tokens[~observed] == 0).all(), "tokens of unmeasured tests must be zero"
    assert (tokens[observed].abs().sum(-1) > 0).all()
    # rows without labs still get a pooled vector (the [CLS] token) and reconstructions
    assert pooled[0].abs().sum() > 0


def test_several_aggregates_make_one_token_per_test_and_aggregate():
    cfg = MLTMConfig(n_tests=5, n_aggregates=3, d_model=16, encoder_layers=1, decoder_layers=1, heads=2)
    model = MLTM(cfg).eval()
    x, observed = _batch(n=8, length=15)
    with torch.no_grad():
        _, tokens = model.embed(x, observed)
        pred, _, _ = model(x, observed, 0.75, torch.Generator().manual_seed(0))
    assert cfg.n_tokens == 15 and tokens.shape == (8, 15, 16) and pred.shape == (8, 15)
    ident = model._identity(model.test_emb, model.agg_emb)
    assert torch.allclose(ident[1 * 5 + 2], model.test_emb[2] + model.agg_emb[1])


def test_batch_composition_does_not_change_a_row():
    """Padding to the longest row of the batch is masked out: a row's outputs do not depend on its batch."""
    model = _model()
    x, observed = _batch(n=64)
    with torch.no_grad():
        p_all, t_all = model.embed(x, observed)
        p_one, t_one = model.embed(x[10:11], observed[10:11])
        r_all = model.reconstruct(x, observed)
        r_one = model.reconstruct(x[10:11], observed[10:11])
    assert torch.allclose(p_all[10:11], p_one, atol=1e-5)
    assert torch.allclose(t_all[10:11], t_one, atol=1e-5)
    assert torch.allclose(r_all[10:11], r_one, atol=1e-5)


def test_a_batch_without_any_observed_value():
    model = _model()
    x = torch.full((3, 12), float("nan"))
    observed = torch.zeros(3, 12, dtype=torch.bool)
    with torch.no_grad():
        pooled, tokens = model.embed(x, observed)
        pred, visible, hidden = model(x, observed, 0.75, torch.Generator().manual_seed(0))
    assert pooled.shape == (3, 32) and tokens.shape == (3, 12, 32) and (tokens == 0).all()
    assert torch.isfinite(pooled).all() and torch.isfinite(pred).all()
    assert not visible.any() and not hidden.any()
    assert masked_mse(pred, x, hidden) == (0.0, 0)
