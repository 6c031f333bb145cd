"""Masked Lab-Test Modelling (MLTM): a masked autoencoder over one admission's lab results.

One token per lab test (and aggregate): ``value * w_token + test identity + aggregate kind``, a per-token
linear value embedding as in the FT-Transformer feature tokenizer (Gorishniy et al. 2021).
Training hides a random share of the *observed* tokens of every admission; the deep encoder sees only
the visible ones (plus a learned [CLS] token), the shallow decoder gets the encoder output, a learned
mask token at every other position and its own identity embeddings, and reconstructs all values.
The loss is the MSE on the hidden observed values only. Tests that were never measured are never
targets and never enter the encoder. At inference every observed token is visible.

Shapes: ``N`` admissions, ``L`` tokens (= tests x aggregates, aggregate-major), ``d`` width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class MLTMConfig:
    n_tests: int
    n_aggregates: int = 1
    d_model: int = 64
    encoder_layers: int = 6
    decoder_layers: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0

    @property
    def n_tokens(self) -> int:
        return self.n_tests * self.n_aggregates

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm transformer block; ``keep`` [N, S] marks the tokens that may be attended to."""

    def __init__(self, d: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        n, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(n, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if keep is None else keep[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(n, s, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


def random_masking(observed: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Choose the visible tokens: per row, hide ``floor(ratio * n_observed + 0.5)`` observed tokens at random.

    Returns ``visible`` [N, L] bool (always a subset of ``observed``). Vectorised: random keys, missing
    tokens sorted last, the lowest-ranked ``n_observed - n_hidden`` observed tokens stay visible.
    """
    n_obs = observed.sum(1)
    n_vis = n_obs - torch.floor(n_obs * ratio + 0.5).long()
    noise = torch.rand(observed.shape, generator=generator, device=observed.device)
    noise = noise.masked_fill(~observed, 2.0)
    rank = noise.argsort(1).argsort(1)
    return rank < n_vis[:, None]


class MLTM(nn.Module):
    def __init__(self, cfg: MLTMConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.value_w = nn.Parameter(torch.empty(cfg.n_tokens, d))  # value embedding direction per token
        self.test_emb = nn.Parameter(torch.zeros(cfg.n_tests, d))
        self.agg_emb = nn.Parameter(torch.zeros(cfg.n_aggregates, d))
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.encoder_layers))
        self.enc_norm = nn.LayerNorm(d)
        self.dec_embed = nn.Linear(d, d)
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.dec_test_emb = nn.Parameter(torch.zeros(cfg.n_tests, d))
        self.dec_agg_emb = nn.Parameter(torch.zeros(cfg.n_aggregates, d))
        self.decoder = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.decoder_layers))
        self.dec_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)
        for p in (self.value_w, self.test_emb, self.agg_emb, self.cls, self.mask_token, self.dec_test_emb, self.dec_agg_emb):
            nn.init.trunc_normal_(p, std=0.02)

    @staticmethod
    def _identity(test_emb: Tensor, agg_emb: Tensor) -> Tensor:
        """[L, d]: the identity of token ``a * n_tests + t`` is ``test_emb[t] + agg_emb[a]``."""
        return (agg_emb[:, None, :] + test_emb[None, :, :]).reshape(-1, test_emb.shape[1])

    def encode(self, x: Tensor, visible: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Encode the visible tokens only.

        ``x`` [N, L] normalised values (anything, NaN included, where not visible). Returns ``cls`` [N, d],
        ``enc`` [N, S, d] (visible tokens packed to the left, S = most visible in a row), ``order`` [N, S]
        (the token index of each packed slot) and ``pad`` [N, S] (True for padding slots).
        """
        n = x.shape[0]
        v = torch.where(visible, x, torch.zeros((), dtype=x.dtype, device=x.device))  # hidden values never enter
        tok = v.unsqueeze(-1) * self.value_w + self._identity(self.test_emb, self.agg_emb)
        n_vis = visible.sum(1)
        s = int(n_vis.max()) if n > 0 else 0
        order = torch.argsort((~visible).to(torch.uint8), dim=1, stable=True)[:, :s]
        pad = torch.arange(s, device=x.device)[None, :] >= n_vis[:, None]
        tok = torch.gather(tok, 1, order.unsqueeze(-1).expand(-1, -1, tok.shape[-1]))
        seq = torch.cat([self.cls.expand(n, -1, -1), tok], 1)
        keep = torch.cat([pad.new_ones(n, 1), ~pad], 1)
        for block in self.encoder:
            seq = block(seq, keep)
        seq = self.enc_norm(seq)
        return seq[:, 0], seq[:, 1:], order, pad

    def scatter_tokens(self, packed: Tensor, order: Tensor, pad: Tensor, length: int) -> Tensor:
        """Packed [N, S, d] -> [N, L, d] at their token positions, zeros elsewhere."""
        n, _, d = packed.shape
        idx = order.masked_fill(pad, length)  # padding goes to a scratch column that is dropped
        out = packed.new_zeros(n, length + 1, d).scatter(1, idx.unsqueeze(-1).expand(-1, -1, d), packed)
        return out[:, :length]

    def decode(self, cls: Tensor, enc: Tensor, order: Tensor, pad: Tensor, visible: Tensor) -> Tensor:
        """Reconstruct every token's normalised value [N, L] from the encoder output."""
        h = self.dec_embed(torch.cat([cls.unsqueeze(1), enc], 1))
        full = self.scatter_tokens(h[:, 1:], order, pad, visible.shape[1])
        full = torch.where(visible.unsqueeze(-1), full, self.mask_token)
        full = full + self._identity(self.dec_test_emb, self.dec_agg_emb)
        seq = torch.cat([h[:, :1], full], 1)
        for block in self.decoder:
            seq = block(seq)
        return self.head(self.dec_norm(seq[:, 1:])).squeeze(-1)

    def forward(
        self, x: Tensor, observed: Tensor, mask_ratio: float = 0.75,
        generator: torch.Generator | None = None, visible: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Masked reconstruction. Returns ``pred`` [N, L], ``visible`` and ``hidden`` (observed, not visible)."""
        if visible is None:
            visible = random_masking(observed, mask_ratio, generator)
        pred = self.decode(*self.encode(x, visible), visible)
        return pred, visible, observed & ~visible

    def embed(self, x: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
        """No masking: ``pooled`` [N, d] ([CLS] output) and ``tokens`` [N, L, d] (zeros where not observed)."""
        cls, enc, order, pad = self.encode(x, observed)
        return cls, self.scatter_tokens(enc, order, pad, x.shape[1])

    def reconstruct(self, x: Tensor, observed: Tensor) -> Tensor:
        """Predicted normalised value of every token [N, L] given all observed tokens."""
        pred, _, _ = self.forward(x, observed, visible=observed)
        return pred


def masked_mse(pred: Tensor, x: Tensor, hidden: Tensor) -> tuple[Tensor, int]:
    """Mean squared error over the hidden entries only (NaN elsewhere is ignored); and their count."""
    err = torch.where(hidden, pred - torch.nan_to_num(x), torch.zeros((), dtype=pred.dtype, device=pred.device))
    n = int(hidden.sum())
    return (err**2).sum() / max(n, 1), n
