"""Attention computed in query chunks for export: no score tensor above a memory budget.

A 512 px Stable Diffusion UNet's first self-attention multiplies 4,096 queries by 4,096 keys per head: at the
classifier-free-guidance batch of 2 and 8 heads that score tensor alone is 1 GiB in fp32, and its softmax another
(benchmarks/results/memory_512.md); a phone's runtime must hold them at once. Computing the attention for a chunk of
queries at a time gives the same result (each query's softmax row is independent of the others) with a score tensor
of ``batch x heads x chunk x keys``, the runtime freeing each chunk's before the next (the peers' "sliced" or
"split" attention, done here below every model instead of inside one).

:func:`chunked_attention` replaces ``torch.nn.functional.scaled_dot_product_attention`` while a component is traced
for export: diffusers' attention processors and transformers' SDPA attention call it by that name, so every model
that uses it (UNets, VAEs, text encoders, transformer backbones) is covered. Calls whose scores fit the budget are
untouched, so small models export the same graphs as without it.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

DEFAULT_BUDGET_MIB = 64.0  # fp32 scores of one chunk (batch x heads x chunk x keys), the default of export


@dataclass
class ChunkRecord:
    """What one export's attention calls were: per distinct shape, how many calls and the chunk they got."""
    budget_bytes: int
    batch: int
    calls: dict = field(default_factory=dict)  # (heads, queries, keys) -> {"calls": n, "chunk": c}

    def to_dict(self) -> dict:
        mib = 2**20
        chunked = [{"heads": h, "queries": q, "keys": k, "chunk": v["chunk"], "calls": v["calls"],
                    "score_mib_whole": round(self.batch * h * q * k * 4 / mib, 2),
                    "score_mib_chunk": round(self.batch * h * v["chunk"] * k * 4 / mib, 2)}
                   for (h, q, k), v in sorted(self.calls.items()) if v["chunk"] < q]
        whole = [self.batch * h * q * k * 4 / mib for (h, q, k), v in self.calls.items() if v["chunk"] >= q]
        return {"budget_mib": round(self.budget_bytes / mib, 2), "batch": self.batch,
                "chunked_calls": sum(r["calls"] for r in chunked), "chunked": chunked,
                "largest_whole_score_mib": round(max(whole), 2) if whole else None}


def _static(x) -> int | None:
    return x if isinstance(x, int) else None


def chunk_size(batch: int, heads: int, queries: int, keys: int, budget_bytes: int) -> int:
    """The most queries per chunk whose fp32 scores (batch x heads x chunk x keys) fit ``budget_bytes`` (at least
    one; ``queries`` when the whole fits)."""
    per_query = 4 * max(1, batch) * max(1, heads) * max(1, keys)
    return max(1, min(queries, budget_bytes // per_query))


def _after(x, previous):
    """``x``, made to depend on ``previous`` (adds zero times one of its elements): a runtime's scheduler, free to
    run independent chunks in any order, would otherwise start every chunk's score product before the first
    softmax and hold all the chunks' scores at once (ONNX Runtime's default order does: benchmarks/memory.py)."""
    return x + previous.flatten()[:1] * 0.0


@contextlib.contextmanager
def chunked_attention(budget_mib: float | None, batch: int = 1):
    """While active, scaled_dot_product_attention runs in query chunks whose fp32 scores fit ``budget_mib`` (None or
    0: unchanged). ``batch``: the component's static batch (its traced batch may be a symbolic size). Yields the
    :class:`ChunkRecord` of the calls made (None when off)."""
    if not budget_mib:
        yield None
        return
    import torch

    original = torch.nn.functional.scaled_dot_product_attention
    record = ChunkRecord(int(budget_mib * 2**20), batch)

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        heads = _static(query.shape[-3]) if query.dim() >= 3 else 1
        queries, keys = _static(query.shape[-2]), _static(key.shape[-2])
        if heads is None or queries is None or keys is None:  # a symbolic size: not chunked
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, **kw)
        c = chunk_size(batch, heads, queries, keys, record.budget_bytes)
        entry = record.calls.setdefault((heads, queries, keys), {"calls": 0, "chunk": c})
        entry["calls"] += 1
        if c >= queries:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, **kw)
        if scale is None:
            scale = 1.0 / math.sqrt(query.shape[-1])
        outs = []
        for start in range(0, queries, c):
            stop = min(queries, start + c)
            mask = None
            if attn_mask is not None:
                mask = attn_mask[..., start:stop, :] if attn_mask.shape[-2] == queries else attn_mask
            if is_causal:  # query i sees keys up to i + (keys - queries)

                rows = torch.arange(start, stop).unsqueeze(1) + (keys - queries)
                causal = torch.arange(keys).unsqueeze(0) <= rows
                if mask is None:
                    mask = causal
                elif mask.dtype == torch.bool:
                    mask = mask & causal
                else:
                    mask = mask.masked_fill(~causal, float("-inf"))
            q = query[..., start:stop, :]
            if outs:  # after the previous chunk: see _after
                q = _after(q, outs[-1])
            outs.append(original(q, key, value, attn_mask=mask, dropout_p=dropout_p, is_causal=False, scale=scale,
                                 **kw))
        return torch.cat(outs, dim=-2)

    torch.nn.functional.scaled_dot_product_attention = sdpa
    try:
        yield record
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
