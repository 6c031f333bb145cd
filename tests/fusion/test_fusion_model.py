"""Fusion models: shapes, the Kronecker tokens, missing modalities, gradients and a tiny fit."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from medfuse.fusion import KINDS, FusionConfig, build_model, kronecker_tokens
from medfuse.fusion.model import modality_dropout

D_NOTE, D_LAB, T, L = 12, 6, 5, 10
VARIANTS = [{"kind": k} for k in KINDS] + [
    {"kind": "medfuse", "use_kronecker": False},
    {"kind": "medfuse", "layers": 2, "mi_sample": False},
    {"kind": "medfuse", "skip_connections": False, "mi_floor": False},
    {"kind": "medfuse", "use_cross_attention": False},
]


def _ids(v: dict) -> str:
    return "-".join(f"{k}={x}" for k, x in v.items())


def make_batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Rows: 0 note missing, 1 labs missing, 2 labs present but no valid token, 3 both missing, rest full."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, T, generator=g) > 0.4
    mask[:, 0] = True
    mask[2] = False
    note_missing = torch.zeros(n, dtype=torch.bool)
    lab_missing = torch.zeros(n, dtype=torch.bool)
    note_missing[[0, 3]] = True
    lab_missing[[1, 3]] = True
    return {
        "note": torch.randn(n, D_NOTE, generator=g),
        "note_missing": note_missing,
        "lab_tokens": torch.randn(n, T, D_LAB, generator=g),
        "lab_pooled": torch.randn(n, D_LAB, generator=g),
        "lab_missing": lab_missing,
        "lab_token_mask": mask,
    }


def make_model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(FusionConfig(**kw), D_NOTE, D_LAB, T, L)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_shapes(variant):
    model = make_model(**variant)
    out = model(**make_batch())
    assert out.logits.shape == (8, L)
    assert torch.isfinite(out.logits).all()
    kind = variant["kind"]
    if kind == "medfuse":
        assert out.s_a.shape == out.s_b.shape == out.s_c.shape == (8, 32)
    else:
        assert out.s_c is None
        assert (out.s_a is None) == (kind == "labs_only")
        assert (out.s_b is None) == (kind == "notes_only")


def test_kronecker_tokens_hand_computed():
    a = torch.tensor([[2.0, 3.0], [1.0, -1.0]])
    b = torch.tensor([[5.0, 7.0], [0.0, 4.0]])
    expected = torch.tensor(
        [
            [[10.0, 14.0, 2.0], [15.0, 21.0, 3.0], [5.0, 7.0, 1.0]],
            [[0.0, 4.0, 1.0], [0.0, -4.0, -1.0], [0.0, 4.0, 1.0]],
        ]
    )
    assert torch.equal(kronecker_tokens(a, b), expected)
    assert kronecker_tokens(torch.randn(3, 2), torch.randn(3, 4)).shape == (3, 3, 5)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError):
        FusionConfig(kind="nope")
    with pytest.raises(ValueError):
        FusionConfig(d=30, heads=4)
    with pytest.raises(ValueError):
        FusionConfig(modality_dropout=0.6)
    with pytest.raises(ValueError):
        FusionConfig(unknown=1)
    cfg = FusionConfig(kind="tfn", d=8, mi_weight=0.0)
    assert FusionConfig.from_dict({**cfg.model_dump(), "unknown": 1}) == cfg


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_missing_inputs_are_never_read(variant):
    model = make_model(**variant).eval()
    batch = make_batch()
    with torch.no_grad():
        ref = model(**batch).logits
        bad = {k: v.clone() for k, v in batch.items()}
        lab_gone = bad["lab_missing"] | ~bad["lab_token_mask"].any(1)
        bad["note"][bad["note_missing"]] = float("nan")
        bad["lab_tokens"][~bad["lab_token_mask"]] = float("nan")
        bad["lab_tokens"][lab_gone] = 1e6
        bad["lab_pooled"][lab_gone] = float("nan")
        out = model(**bad).logits
    assert torch.isfinite(out).all()
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_gradients_reach_every_part(variant):
    model = make_model(dropout=0.0, **variant).train()
    batch = make_batch()
    out = model(**batch)
    loss, parts = model.main_loss(out, (torch.rand(8, L) > 0.5).float(), pos_weight=torch.full((L,), 2.0))
    loss.backward()
    names = {id(p): n for n, p in model.named_parameters()}
    for p in model.main_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, names[id(p)]
    est = model.estimator_parameters()
    assert all(p.grad is None for p in est), "the main loss must not train the estimator"
    assert {id(p) for p in est}.isdisjoint(id(p) for p in model.main_parameters())
    assert len(est) + len(model.main_parameters()) == len(list(model.parameters()))
    if variant["kind"] != "medfuse":
        assert est == [] and "mi" not in parts
        assert model.mi_upper_bound(out).item() == 0.0
        return
    mi = max(parts["mi"], 0.0) if variant.get("mi_floor", True) else parts["mi"]
    assert "mi" in parts and parts["loss"] == pytest.approx(parts["bce"] + 0.1 * mi, rel=1e-4)
    model.zero_grad(set_to_none=True)
    model.estimator_loss(model(**batch)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in est)
    assert all(p.grad is None for p in model.main_parameters()), "estimator loss must use detached features"


def test_skip_connections_switch():
    """Off: the skip encoders are absent and the dense head sees only [s_a, s_c, s_b] (3d wide); on (the
    default): it also sees LN(note) and LN(lab_pooled), and the input itself moves the logits directly."""
    on, off = make_model(d=8, heads=2), make_model(d=8, heads=2, skip_connections=False)
    assert on.head.inp.in_features == 3 * 8 + D_NOTE + D_LAB
    assert off.head.inp.in_features == 3 * 8
    extra = set(on.state_dict()) - set(off.state_dict())
    assert extra and all(k.startswith(("note_skip.", "lab_skip.")) for k in extra)
    assert set(off.state_dict()) < set(on.state_dict())
    assert not hasattr(off, "note_skip") and not hasattr(off, "lab_skip")
    batch = make_batch()
    assert off.eval()(**batch).logits.shape == (8, L)
    with torch.no_grad():  # the head's columns after the first 3d read the skip inputs: cutting them matters
        ref = on.eval()(**batch).logits
        on.head.inp.weight[:, 3 * 8:] = 0.0
        assert not torch.allclose(on(**batch).logits, ref)


def test_cross_attention_switch():
    """Off: no cross-attention block is built (exactly one Block's parameters fewer at layers=1) and s_c is the
    queries alone, so the lab and note tokens' attention path no longer moves s_c; on (the default) it does.
    s_a, s_b and the skip inputs are untouched either way, so the logits still read the lab tokens via s_b."""
    from medfuse.fusion.model import Block

    on, off = make_model(d=8, heads=2), make_model(d=8, heads=2, use_cross_attention=False)
    assert len(on.cross_blocks) == 1 and len(off.cross_blocks) == 0
    missing = set(on.state_dict()) - set(off.state_dict())
    assert missing and all(k.startswith("cross_blocks.") for k in missing)
    assert set(off.state_dict()) < set(on.state_dict())
    n_params = sum(p.numel() for p in on.parameters()) - sum(p.numel() for p in off.parameters())
    assert n_params == sum(p.numel() for p in Block(8, 2, 0.0, cross=True).parameters()) == 1 * (
        2 * 8 + 8 * 8 + 8 + 8 * 16 + 16 + 8 * 8 + 8 + 2 * 8 + 8 * 32 + 32 + 32 * 8 + 8 + 2 * 8)  # 2 LNs in, q, kv, proj, LN, MLP
    batch = make_batch()
    other = {**batch, "lab_tokens": batch["lab_tokens"] + torch.randn_like(batch["lab_tokens"]),
             "note": batch["note"].clone()}
    with torch.no_grad():
        for model, moves in ((on, True), (off, False)):
            model.eval()
            ref, new = model(**batch), model(**other)
            full = ~batch["lab_missing"] & batch["lab_token_mask"].any(1)  # rows whose lab tokens are read
            assert not torch.allclose(ref.s_b[full], new.s_b[full])  # the lab tokens still reach s_b
            assert torch.allclose(ref.s_c, new.s_c, atol=1e-6) != moves
        # without cross-attention s_c is exactly the LayerNormed queries, mean-pooled
        lab_missing = batch["lab_missing"] | ~batch["lab_token_mask"].any(1)  # row 2: no valid token
        a, b = off.a_vec(batch["note"], batch["note_missing"]), off.b_vec(batch["lab_pooled"], lab_missing)
        queries = off.kron_proj(kronecker_tokens(a, b)) + off.query_pos
        assert torch.allclose(off(**batch).s_c, off.ln_c(queries).mean(1), atol=1e-6)


def test_mi_floor_switch():
    """With the floor (default) a negative vCLUB estimate adds nothing to the loss; without it the raw
    estimate is added, so a negative bound lowers the loss and its gradient still flows."""
    batch, y = make_batch(), (torch.rand(8, L, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    for floor in (True, False):
        model = make_model(mi_floor=floor, mi_weight=0.5)
        model.mi_upper_bound = lambda out, sample=None: out.s_c.sum() * 0.0 - 2.0
        loss, parts = model.main_loss(model(**batch), y)
        expected = parts["bce"] if floor else parts["bce"] + 0.5 * -2.0
        assert parts["mi"] == pytest.approx(-2.0)
        assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_train_config_switches_reach_the_fusion_config():
    from medfuse.config import TrainConfig

    default = TrainConfig().fusion
    assert default == FusionConfig() and type(default) is FusionConfig
    assert default.skip_connections and default.mi_floor and default.use_cross_attention
    assert (default.note_tokens, default.mi_hidden, default.mi_logvar_bound) == (4, 64, 1.0)
    off = TrainConfig(skip_connections=False, mi_floor=False, use_cross_attention=False).fusion
    assert not off.skip_connections and not off.mi_floor and not off.use_cross_attention


def test_every_fusion_setting_is_set_from_train_toml(tmp_path):
    """Each FusionConfig field is a [train] key: a value in a user's file reaches the model's config."""
    from medfuse.config import load_config

    values = {"kind": "tfn", "d": 16, "heads": 2, "layers": 2, "note_tokens": 2, "dense_hidden": 24,
              "dense_layers": 1, "dropout": 0.2, "modality_dropout": 0.3, "mi_weight": 0.5, "mi_hidden": 8,
              "mi_logvar_bound": 2.0, "mi_sample": False, "use_kronecker": False, "skip_connections": False,
              "mi_floor": False, "use_cross_attention": False}
    assert set(values) == set(FusionConfig.model_fields)
    assert all(FusionConfig().model_dump()[k] != v for k, v in values.items())
    f = tmp_path / "user.toml"
    f.write_text("[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))  # JSON scalars are TOML
    assert load_config(f).train.fusion.model_dump() == values


def test_note_tokens_and_estimator_settings_shape_the_model():
    from medfuse.config import TrainConfig

    model = build_model(TrainConfig(note_tokens=2, mi_hidden=8, mi_logvar_bound=2.0).fusion, D_NOTE, D_LAB,
                        T, L)
    assert model.note_pos.shape == (2, 32) and model.note_in.net[1].out_features == 2 * 32
    assert model.club.mu[0].out_features == model.club.logvar[0].out_features == 8
    assert model.club.logvar_bound == 2.0
    out = model(**make_batch())
    assert out.logits.shape == (8, L) and torch.isfinite(out.logits).all()


def test_modality_dropout_never_hides_both():
    torch.manual_seed(0)
    n = 20000
    note_missing, lab_missing = torch.rand(n) < 0.1, torch.rand(n) < 0.1
    both_before = ~note_missing & ~lab_missing
    nm, lm = modality_dropout(note_missing, lab_missing, 0.3)
    assert (nm >= note_missing).all() and (lm >= lab_missing).all()
    assert not (nm & lm & both_before).any()
    assert (nm[~both_before] == note_missing[~both_before]).all()
    assert (lm[~both_before] == lab_missing[~both_before]).all()
    assert abs(nm[both_before].float().mean().item() - 0.3) < 0.02
    assert abs(lm[both_before].float().mean().item() - 0.3) < 0.02


@pytest.mark.parametrize("kind", ["medfuse", "concat"])
def test_modality_dropout_only_in_train_mode(kind):
    batch = make_batch(n=64)
    model = make_model(kind=kind, dropout=0.0, modality_dropout=0.5)
    with torch.no_grad():
        ev1, ev2 = model.eval()(**batch).logits, model(**batch).logits
        tr = model.train()(**batch).logits
    assert torch.equal(ev1, ev2)
    assert not torch.allclose(tr, ev1)
    plain = make_model(kind=kind, dropout=0.0, modality_dropout=0.0)
    with torch.no_grad():
        assert torch.allclose(plain.train()(**batch).logits, plain.eval()(**batch).logits, atol=1e-6)


def test_tiny_fit_on_an_interaction_task():
    """Labels depend on the product of a note projection and a lab projection; two optimizers alternate."""
    g = torch.Generator().manual_seed(0)
    n = 256
    note = torch.randn(n, D_NOTE, generator=g)
    tokens = torch.randn(n, T, D_LAB, generator=g)
    u, v = torch.randn(D_NOTE, 3, generator=g), torch.randn(D_LAB, 3, generator=g)
    y = ((note @ u) * (tokens.mean(1) @ v) > 0).float()
    batch = {
        "note": note,
        "note_missing": torch.zeros(n, dtype=torch.bool),
        "lab_tokens": tokens,
        "lab_pooled": tokens.mean(1),
        "lab_missing": torch.zeros(n, dtype=torch.bool),
        "lab_token_mask": torch.ones(n, T, dtype=torch.bool),
    }
    torch.manual_seed(0)
    model = build_model(FusionConfig(d=16, heads=2, dropout=0.0, modality_dropout=0.0), D_NOTE, D_LAB, T, 3)
    main_opt = torch.optim.AdamW(model.main_parameters(), lr=3e-3)
    est_opt = torch.optim.AdamW(model.estimator_parameters(), lr=3e-3)

    def bce() -> float:
        with torch.no_grad():
            return F.binary_cross_entropy_with_logits(model.eval()(**batch).logits, y).item()

    start = bce()
    model.train()
    for _ in range(80):
        out = model(**batch)
        est_opt.zero_grad()
        model.estimator_loss(out).backward()
        est_opt.step()
        loss, _ = model.main_loss(out, y)
        main_opt.zero_grad()
        loss.backward()
        main_opt.step()
    end = bce()
    assert end < 0.8 * start, (start, end)
