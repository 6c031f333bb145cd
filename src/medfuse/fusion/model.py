"""MEDFuse fusion model and its baselines (docs/fusion.md).

Inputs, for ``N`` admissions: the note embedding ``note`` [N, d_a]; the MLTM lab tokens ``lab_tokens``
[N, T, d_b] with ``lab_token_mask`` [N, T] (True = observed / valid) and the pooled lab embedding
``lab_pooled`` [N, d_b]; ``note_missing`` and ``lab_missing`` [N] bool. Values of missing inputs (and of
invalid lab tokens) are never read: they are zeroed before any layer and replaced by learned "absent"
embeddings, so NaN or garbage there cannot leak into the output. A row whose labs are present but has no
valid token counts as lab-missing.

MEDFuse (``kind="medfuse"``), with ``d`` the common width and ``k = note_tokens``:

    note  -> LN -> Linear(d_a, k*d) -> [N, k, d] + pos  -> self-attention x layers -> LN -> S_a [N, k, d]
    labs  -> LN -> Linear(d_b, d)   -> [N, T, d] + pos  -> masked self-attention   -> LN -> S_b [N, T, d]
    a = LN(Linear(LN(note))), b = LN(Linear(LN(lab_pooled)))                        a, b  [N, d]
    C = Linear(d+1, d)(kronecker_tokens(a, b)) + row embedding                     C     [N, d+1, d]
    C -> cross-attention over [S_a; S_b] (masked) x layers -> LN                   S_c   [N, d+1, d]
    s_a = mean_k S_a, s_b = mean over valid tokens of S_b, s_c = mean S_c          [N, d] each
    logits = DenseHead([s_a, s_c, s_b, LN(note), LN(lab_pooled)])                  [N, L]

The last two inputs are skip connections around the fusion: the dense block also sees the
LayerNormed inputs themselves, so the disentangled features add to what a plain concatenation has
rather than replace it (``skip_connections=False`` drops them). The vCLUB bound ``I([s_a; s_b]; s_c)``,
floored at 0 (``mi_floor=False``: not floored), is the mutual-information penalty. ``use_kronecker=False``
replaces C by ``d+1`` learned query tokens plus ``Linear(2d, d)([s_a; s_b])``. ``use_cross_attention=False``
builds no cross-attention blocks: S_c = LN(C), the queries alone, never attending to [S_a; S_b].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from medfuse.config import FusionConfig, FusionKind
from medfuse.fusion.club import CLUBEstimator, penalty

# The model's settings are the FusionConfig part of the ``[train]`` section (``TrainConfig.fusion``); their
# defaults are the shipped default.toml's (docs/configuration.md).
KINDS: tuple[str, ...] = get_args(FusionKind)


@dataclass
class ModelOutput:
    logits: Tensor  # [N, L]
    s_a: Tensor | None  # pooled note feature [N, *] (None for labs_only)
    s_b: Tensor | None  # pooled lab feature [N, *] (None for notes_only)
    s_c: Tensor | None = None  # pooled shared feature [N, d] (medfuse only)


def kronecker_tokens(a: Tensor, b: Tensor) -> Tensor:
    """``[a; 1] (x) [b; 1]`` per row: a [N, p], b [N, q] -> [N, p+1, q+1], entry (i, j) = a'_i * b'_j.

    Row ``i < p`` is ``a_i * [b; 1]``; the last row is ``[b; 1]`` and the last column ``[a; 1]``, so the
    unimodal terms survive next to the bimodal products (Tensor Fusion Networks, Zadeh et al. 2017).
    """
    one = a.new_ones(a.shape[0], 1)
    return torch.cat([a, one], 1)[:, :, None] * torch.cat([b, one], 1)[:, None, :]


def modality_dropout(note_missing: Tensor, lab_missing: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Hide the note with probability ``p`` and the labs with probability ``p`` (exclusive events), only
    in rows that have both; returns the new ``(note_missing, lab_missing)``."""
    both = ~note_missing & ~lab_missing
    r = torch.rand(note_missing.shape, device=note_missing.device)
    return note_missing | (both & (r < p)), lab_missing | (both & (r >= p) & (r < 2 * p))


def masked_mean(x: Tensor, keep: Tensor) -> Tensor:
    """Mean of x [N, S, d] over the tokens with keep [N, S] True (each row needs one)."""
    w = keep.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention (``ctx=None``) or cross-attention from ``x`` to ``ctx``,
    then an MLP. ``keep`` [N, S_ctx] marks the keys that may be attended to."""

    def __init__(self, d: int, heads: int, dropout: float, cross: bool = False):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln_x, self.ln_ctx = nn.LayerNorm(d), (nn.LayerNorm(d) if cross else None)
        self.q, self.kv, self.proj = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ln_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, ctx: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
        (n, s, d), h = x.shape, self.heads
        hx = self.ln_x(x)
        hc = hx if ctx is None else self.ln_ctx(ctx)
        q = self.q(hx).view(n, s, h, d // h).transpose(1, 2)
        k, v = self.kv(hc).view(n, hc.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if keep is None else keep[:, None, None, :]
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(n, s, d)))
        return x + self.drop(self.mlp(self.ln_mlp(x)))


class VectorEncoder(nn.Module):
    """One modality's vector: LN -> Linear(d_in, d_out) (-> LN), or only LN when ``d_out`` is None.
    Missing rows get a learned absent vector instead (their input is zeroed first, never read)."""

    def __init__(self, d_in: int, d_out: int | None = None, norm_out: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(d_in)]
        if d_out is not None:
            layers.append(nn.Linear(d_in, d_out))
            if norm_out:
                layers.append(nn.LayerNorm(d_out))
        self.net = nn.Sequential(*layers)
        self.absent = nn.Parameter(0.02 * torch.randn(d_out or d_in))

    def forward(self, x: Tensor, missing: Tensor) -> Tensor:
        x = x.masked_fill(missing[:, None], 0.0)
        return torch.where(missing[:, None], self.absent, self.net(x))


class DenseHead(nn.Module):
    """Dense fusion block: Linear(d_in, H), ``layers`` residual blocks ``h += Drop(GELU(Linear(LN(h))))``,
    LN, Linear(H, n_labels) -> logits (sigmoid / BCE-with-logits outside)."""

    def __init__(self, d_in: int, hidden: int, layers: int, n_labels: int, dropout: float):
        super().__init__()
        self.inp = nn.Linear(d_in, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
            for _ in range(layers)
        )
        self.ln, self.out = nn.LayerNorm(hidden), nn.Linear(hidden, n_labels)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(self.ln(h))


class FusionBase(nn.Module):
    """Shared plumbing: missing-modality flags, modality dropout and the (empty) MI interface."""

    uses_notes = uses_labs = True
    has_estimator = False

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg

    def _missing(
        self, note_missing: Tensor, lab_missing: Tensor, lab_token_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        note_missing = note_missing.bool()
        lab_missing = lab_missing.bool() | ~lab_token_mask.bool().any(1)
        if self.training and self.uses_notes and self.uses_labs and self.cfg.modality_dropout > 0:
            note_missing, lab_missing = modality_dropout(note_missing, lab_missing, self.cfg.modality_dropout)
        return note_missing, lab_missing

    def main_parameters(self) -> list[nn.Parameter]:
        est = {id(p) for p in self.estimator_parameters()}
        return [p for p in self.parameters() if id(p) not in est]

    def estimator_parameters(self) -> list[nn.Parameter]:
        return []

    def mi_upper_bound(self, out: ModelOutput, sample: bool | None = None) -> Tensor:
        """vCLUB bound to be minimised by the main model; gradients reach the features, not the estimator."""
        return out.logits.new_zeros(())

    def estimator_loss(self, out: ModelOutput) -> Tensor:
        """Negative log-likelihood of q on detached features, for the estimator's own optimizer."""
        return out.logits.new_zeros(())

    def main_loss(
        self, out: ModelOutput, targets: Tensor, pos_weight: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """``BCE-with-logits + mi_weight * mi_upper_bound`` and its parts (floats) for logging."""
        bce = F.binary_cross_entropy_with_logits(
            out.logits, targets.to(out.logits.dtype), pos_weight=pos_weight
        )
        loss, parts = bce, {"bce": bce.item()}
        if self.has_estimator:
            mi = self.mi_upper_bound(out)
            parts["mi"] = mi.item()
            if self.cfg.mi_weight > 0:
                loss = loss + self.cfg.mi_weight * penalty(mi, self.cfg.mi_floor)
        parts["loss"] = loss.item()
        return loss, parts


class MEDFuse(FusionBase):
    has_estimator = True

    def __init__(self, cfg: FusionConfig, d_note: int, d_lab: int, d_pool: int, n_lab_tokens: int, n_labels: int):
        super().__init__(cfg)
        d, k = cfg.d, cfg.note_tokens
        self.note_in = VectorEncoder(d_note, k * d)
        self.note_pos = nn.Parameter(0.02 * torch.randn(k, d))
        self.lab_ln, self.lab_proj = nn.LayerNorm(d_lab), nn.Linear(d_lab, d)
        self.lab_pos = nn.Parameter(0.02 * torch.randn(n_lab_tokens, d))
        self.lab_absent = nn.Parameter(0.02 * torch.randn(d))
        self.note_blocks = nn.ModuleList(Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.lab_blocks = nn.ModuleList(Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.ln_a, self.ln_b, self.ln_c = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        if cfg.use_kronecker:
            self.a_vec = VectorEncoder(d_note, d, norm_out=True)
            self.b_vec = VectorEncoder(d_pool, d, norm_out=True)
            self.kron_proj = nn.Linear(d + 1, d)
        else:
            self.pool_proj = nn.Linear(2 * d, d)
        self.query_pos = nn.Parameter(0.02 * torch.randn(d + 1, d))
        self.cross_blocks = nn.ModuleList(
            Block(d, cfg.heads, cfg.dropout, cross=True) for _ in range(cfg.layers if cfg.use_cross_attention else 0)
        )
        # skip connections: the LayerNormed inputs themselves also reach the dense block
        if cfg.skip_connections:
            self.note_skip, self.lab_skip = VectorEncoder(d_note), VectorEncoder(d_pool)
        skip_width = d_note + d_pool if cfg.skip_connections else 0
        self.head = DenseHead(3 * d + skip_width, cfg.dense_hidden, cfg.dense_layers, n_labels, cfg.dropout)
        self.club = CLUBEstimator(2 * d, d, cfg.mi_hidden, cfg.mi_logvar_bound)

    def forward(
        self,
        note: Tensor,
        note_missing: Tensor,
        lab_tokens: Tensor,
        lab_pooled: Tensor,
        lab_missing: Tensor,
        lab_token_mask: Tensor,
    ) -> ModelOutput:
        note_missing, lab_missing = self._missing(note_missing, lab_missing, lab_token_mask)
        n, t, _ = lab_tokens.shape
        if t > self.lab_pos.shape[0]:
            raise ValueError(
                f"{t} lab tokens, but the model was built for n_lab_tokens={self.lab_pos.shape[0]}"
            )
        # S_a: the note vector as k tokens (absent rows: a learned vector reshaped the same way)
        x_a = self.note_in(note, note_missing).view(n, self.cfg.note_tokens, self.cfg.d) + self.note_pos
        for block in self.note_blocks:
            x_a = block(x_a)
        s_a_tok = self.ln_a(x_a)
        # S_b: one token per lab token; absent rows keep one learned token in slot 0, the rest masked out
        keep = lab_token_mask.bool() & ~lab_missing[:, None]
        x_b = self.lab_proj(self.lab_ln(lab_tokens.masked_fill(~keep[..., None], 0.0))) + self.lab_pos[:t]
        x_b = torch.where(lab_missing[:, None, None], self.lab_absent, x_b)
        first = torch.arange(t, device=keep.device) == 0
        keep = torch.where(lab_missing[:, None], first, keep)
        for block in self.lab_blocks:
            x_b = block(x_b, keep=keep)
        s_b_tok = self.ln_b(x_b)
        s_a, s_b = s_a_tok.mean(1), masked_mean(s_b_tok, keep)
        # queries: Kronecker tokens of the pooled projections, or learned + pooled (ablation)
        if self.cfg.use_kronecker:
            a, b = self.a_vec(note, note_missing), self.b_vec(lab_pooled, lab_missing)
            c = self.kron_proj(kronecker_tokens(a, b)) + self.query_pos
        else:
            c = self.query_pos + self.pool_proj(torch.cat([s_a, s_b], 1))[:, None, :]
        ctx = torch.cat([s_a_tok, s_b_tok], 1)
        ctx_keep = torch.cat([keep.new_ones(n, self.cfg.note_tokens), keep], 1)
        for block in self.cross_blocks:
            c = block(c, ctx, ctx_keep)
        s_c = self.ln_c(c).mean(1)
        features = [s_a, s_c, s_b]
        if self.cfg.skip_connections:
            features += [self.note_skip(note, note_missing), self.lab_skip(lab_pooled, lab_missing)]
        logits = self.head(torch.cat(features, 1))
        return ModelOutput(logits, s_a, s_b, s_c)

    def estimator_parameters(self) -> list[nn.Parameter]:
        return list(self.club.parameters())

    def mi_upper_bound(self, out: ModelOutput, sample: bool | None = None) -> Tensor:
        sample = self.cfg.mi_sample if sample is None else sample
        frozen = {name: p.detach() for name, p in self.club.named_parameters()}
        return functional_call(
            self.club, frozen, (torch.cat([out.s_a, out.s_b], 1), out.s_c), {"sample": sample}
        )

    def estimator_loss(self, out: ModelOutput) -> Tensor:
        return self.club.learning_loss(torch.cat([out.s_a, out.s_b], 1).detach(), out.s_c.detach())


class VectorFusion(FusionBase):
    """Baselines on the note vector ``a`` and the pooled lab vector ``b`` (both LayerNormed, learned
    absent vectors for missing rows) followed by the same DenseHead:

    * ``concat``: head([a; b]) on the raw widths d_a + d_b;
    * ``tfn``: a, b projected to d, head(flatten([a; 1] (x) [b; 1])) of width (d+1)^2;
    * ``notes_only``: head(a); ``labs_only``: head(b) (no modality dropout: the other input is ignored).
    """

    def __init__(self, cfg: FusionConfig, d_note: int, d_lab: int, n_labels: int):
        super().__init__(cfg)
        self.uses_notes, self.uses_labs = cfg.kind != "labs_only", cfg.kind != "notes_only"
        proj = cfg.d if cfg.kind == "tfn" else None
        self.note_in = VectorEncoder(d_note, proj, norm_out=True) if self.uses_notes else None
        self.lab_in = VectorEncoder(d_lab, proj, norm_out=True) if self.uses_labs else None
        width = {
            "concat": d_note + d_lab,
            "tfn": (cfg.d + 1) ** 2,
            "notes_only": d_note,
            "labs_only": d_lab,
        }[cfg.kind]
        self.head = DenseHead(width, cfg.dense_hidden, cfg.dense_layers, n_labels, cfg.dropout)

    def forward(
        self,
        note: Tensor,
        note_missing: Tensor,
        lab_tokens: Tensor,
        lab_pooled: Tensor,
        lab_missing: Tensor,
        lab_token_mask: Tensor,
    ) -> ModelOutput:
        note_missing, lab_missing = self._missing(note_missing, lab_missing, lab_token_mask)
        a = self.note_in(note, note_missing) if self.uses_notes else None
        b = self.lab_in(lab_pooled, lab_missing) if self.uses_labs else None
        if self.cfg.kind == "tfn":
            x = kronecker_tokens(a, b).flatten(1)
        else:
            x = torch.cat([v for v in (a, b) if v is not None], 1)
        return ModelOutput(self.head(x), a, b, None)


def build_model(cfg: FusionConfig, d_note: int, d_lab: int, n_lab_tokens: int, n_labels: int,
                d_lab_pooled: int | None = None) -> FusionBase:
    """The fusion model or baseline named by ``cfg.kind`` (all share one forward signature).

    ``d_lab`` is the width of a lab token, ``d_lab_pooled`` that of the pooled lab vector (default ``d_lab``).
    """
    d_pool = d_lab_pooled or d_lab
    if cfg.kind == "medfuse":
        return MEDFuse(cfg, d_note, d_lab, d_pool, n_lab_tokens, n_labels)
    return VectorFusion(cfg, d_note, d_pool, n_labels)
