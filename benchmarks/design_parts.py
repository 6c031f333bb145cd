"""Why a MEDFuse part does or does not help: knock-outs and read-outs of one trained MEDFuse on validation rows.

Used by ``benchmarks/design_checks.py --only parts``. Every figure is computed on the rows given (the development
cohort's validation split there), in eval mode, in one batch, so a "mean" below is the mean over those rows:

* ``val_macro_auprc``: the trained model as it is;
* ``knockouts``: macro-AUPRC when one input of the dense head (or of the model) is replaced by its mean over the
  rows, everything else unchanged: ``s_c`` (the shared feature), ``skips`` (LN(note) and LN(lab_pooled)),
  ``mltm`` (the frozen MLTM tokens and pooled vector; the value channels stay), ``lab_values`` (the five value
  channels; the MLTM output stays) and ``context_shuffled`` (the cross-attention reads another row's
  [S_a; S_b]);
* ``head_share``: each input block's share of the dense head's first layer, ``RMS(W_block (x_block - mean))``
  over rows and hidden units, divided by the sum over blocks;
* ``s_c_change_context_shuffled``: ``||s_c(shuffled) - s_c|| / ||s_c - mean s_c||`` (0 = the context does not
  move s_c, about 1.4 = s_c is as different as another row's);
* ``attention``: the cross-attention's entropy over its valid keys divided by log(#valid keys) (1 = uniform,
  i.e. a plain mean of the context), and the share of attention mass on the note tokens, mean over rows, heads
  and queries (first cross block);
* ``vclub_val``: the vCLUB estimate of I([s_a; s_b]; s_c) on the rows (all-pairs bound, nats).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

KNOCKOUTS = {"s_c": "s_c", "skips": "skip inputs", "mltm": "MLTM output", "lab_values": "value channels",
             "context_shuffled": "context shuffled"}


@contextmanager
def _hooks(*handles):
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _mean_rows(module, _inputs, output):
    """A forward hook: the module's output replaced by its mean over the batch rows."""
    return output.mean(0, keepdim=True).expand_as(output).contiguous()


def inspect_medfuse(net, data, rows: np.ndarray, device: torch.device, seed: int = 0) -> dict:
    """The read-outs listed in the module docstring for a trained :class:`~medfuse.training.fusion.FusionNet`
    around a MEDFuse model; ``rows`` are scored in one batch."""
    from medfuse.trainer import macro_auprc

    net = net.to(device).eval()
    fusion = net.fusion
    y = data.y[rows]
    batch = data.tensors(rows, device)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(rows))).to(device)

    @torch.no_grad()
    def run(b=batch):
        return net(b)

    def auprc(out) -> float:
        return round(macro_auprc(y, torch.sigmoid(out.logits).cpu().numpy()), 4)

    def replaced(key: str) -> dict:
        b = dict(batch)
        b[key] = b[key].mean(0, keepdim=True).expand_as(b[key]).contiguous()
        return b

    base = run()
    result: dict = {"val_macro_auprc": auprc(base), "knockouts": {}}
    ko = result["knockouts"]
    with _hooks(fusion.ln_c.register_forward_hook(_mean_rows)):
        ko["s_c"] = auprc(run())
    if fusion.cfg.skip_connections:
        with _hooks(fusion.note_skip.register_forward_hook(_mean_rows),
                    fusion.lab_skip.register_forward_hook(_mean_rows)):
            ko["skips"] = auprc(run())
    if net.lab_encoder is None:  # the frozen MLTM output is an input: replace it, keep the value channels
        b = replaced("lab_tokens")
        b["lab_pooled"] = replaced("lab_pooled")["lab_pooled"]
        ko["mltm"] = auprc(run(b))
    if net.lab_values:
        ko["lab_values"] = auprc(run(replaced("lab_values")))

    captured: dict = {}
    if len(fusion.cross_blocks):
        def shuffle(module, args):
            c, ctx, keep = args
            return c, ctx[perm], keep[perm]

        def capture(module, args):
            captured["args"] = args

        with _hooks(*(blk.register_forward_pre_hook(shuffle) for blk in fusion.cross_blocks)):
            shuffled = run()
        ko["context_shuffled"] = auprc(shuffled)
        spread = (base.s_c - base.s_c.mean(0)).norm()
        result["s_c_change_context_shuffled"] = round(float((shuffled.s_c - base.s_c).norm() / spread), 4)
        with _hooks(fusion.cross_blocks[0].register_forward_pre_hook(capture)):
            run()
        result["attention"] = _attention(fusion.cross_blocks[0], *captured["args"], fusion.cfg.note_tokens)

    # each input block's share of the dense head's first layer
    head_in: dict = {}
    with _hooks(fusion.head.inp.register_forward_pre_hook(lambda m, a: head_in.update(x=a[0]))):
        run()
    x, w = head_in["x"], fusion.head.inp.weight
    d = fusion.cfg.d
    widths = {"s_a": d, "s_c": d, "s_b": d}
    if fusion.cfg.skip_connections:
        widths["LN(note)"] = fusion.note_skip.absent.numel()
        widths["LN(lab_pooled)"] = fusion.lab_skip.absent.numel()
    rms, start = {}, 0
    with torch.no_grad():
        for name, width in widths.items():
            part = x[:, start:start + width]
            rms[name] = float(((part - part.mean(0)) @ w[:, start:start + width].T).pow(2).mean().sqrt())
            start += width
    total = sum(rms.values())
    result["head_share"] = {k: round(v / total, 4) for k, v in rms.items()}
    with torch.no_grad():
        result["vclub_val"] = round(float(fusion.mi_upper_bound(base, sample=False)), 4)
    return result


@torch.no_grad()
def _attention(block, c: torch.Tensor, ctx: torch.Tensor, keep: torch.Tensor, note_tokens: int) -> dict:
    """Normalised entropy and note share of one cross-attention block's weights (as its forward computes them)."""
    n, s, d = c.shape
    h = block.heads
    q = block.q(block.ln_x(c)).view(n, s, h, d // h).transpose(1, 2)
    k, _ = block.kv(block.ln_ctx(ctx)).view(n, ctx.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
    scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    p = torch.softmax(scores, -1)  # [N, h, S, K]
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    valid = keep.sum(1).clamp_min(2).to(p.dtype)[:, None, None]
    return {"normalised_entropy": round(float((entropy / torch.log(valid)).mean()), 4),
            "note_share": round(float(p[..., :note_tokens].sum(-1).mean()), 4),
            "note_share_if_uniform": round(float((note_tokens / keep.sum(1).to(p.dtype)).mean()), 4)}


# --- tables (means over training seeds) ----------------------------------------------------------
def _mean(runs: list[dict], *path: str) -> float | None:
    values = []
    for r in runs:
        v = r.get("inspect", {})
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if v is not None:
            values.append(v)
    return float(np.mean(values)) if values else None


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def inspect_tables(fusion: dict) -> list[str]:
    """The knock-out and read-out tables of a check's fusion variants (means over seeds)."""
    lines = [("Knock-outs (validation macro-AUPRC of the trained model with one input replaced by its mean "
              "over the validation rows; mean of the seeds):"), "",
             "| MEDFuse variant | as trained | " + " | ".join(KNOCKOUTS.values()) + " |",
             "|---|---:|" + "---:|" * len(KNOCKOUTS)]
    for vname, v in fusion.items():
        cells = [_num(_mean(v["runs"], "knockouts", k)) for k in KNOCKOUTS]
        lines.append(f"| {vname} | {_num(_mean(v['runs'], 'val_macro_auprc'))} | " + " | ".join(cells) + " |")
    blocks = ("s_a", "s_c", "s_b", "LN(note)", "LN(lab_pooled)")
    lines += ["", ("Read-outs: each input block's share of the dense head's first layer (RMS of its centred "
                   "contribution); how far s_c moves when the cross-attention reads another row's context "
                   "(relative to the spread of s_c); the cross-attention's normalised entropy (1 = uniform) and "
                   "its mass on the note tokens (uniform share in brackets); the vCLUB estimate on validation "
                   "(all pairs, nats):"), "",
              "| MEDFuse variant | " + " | ".join(f"head share {b}" for b in blocks)
              + " | s_c change, context shuffled | attention entropy | note share | vCLUB, val |",
              "|---|" + "---:|" * (len(blocks) + 4)]
    for vname, v in fusion.items():
        runs = v["runs"]
        cells = [_num(_mean(runs, "head_share", b), ".2f") for b in blocks]
        uniform = _mean(runs, "attention", "note_share_if_uniform")
        share = _num(_mean(runs, "attention", "note_share"), ".2f")
        share += "" if uniform is None else f" ({uniform:.2f})"
        cells += [_num(_mean(runs, "s_c_change_context_shuffled"), ".2f"),
                  _num(_mean(runs, "attention", "normalised_entropy"), ".3f"), share,
                  _num(_mean(runs, "vclub_val"), ".2f")]
        lines.append(f"| {vname} | " + " | ".join(cells) + " |")
    return lines + [""]
