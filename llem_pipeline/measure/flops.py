"""FLOPs estimate (docs/methodology.md §3.8): ``2 · N_nonembedding · tokens`` (PaLM / Kaplan forward-pass rule).

The counting rule for N, by module TYPE (never by parameter name, never by a formula from the config):

- every unique parameter of the model counts once (shared / tied parameters are deduplicated),
- except parameters owned by ``torch.nn.Embedding`` / ``EmbeddingBag`` modules (token and learned
  position embeddings: a lookup, not a matmul),
- a TIED ``lm_head`` is the embedding matrix itself, so it is counted zero times: its output projection
  (2 · d_model · vocab FLOPs per token) is real compute that this estimate leaves out, consistent with
  N_nonembedding of PaLM/Kaplan;
- an UNTIED ``lm_head`` is an ordinary Linear layer with its own weights and is counted.

Because actual module parameters are counted, grouped-query attention (narrow k/v projections), gated
MLPs (three matrices), biases and norms come out exactly. bitsandbytes 4-bit weights are packed; their
logical size is taken from ``quant_state.shape``. torch is imported inside the function only.
"""

from __future__ import annotations

import math
from typing import Any

from llem_pipeline.domain.metrics import FlopsResult

FLOPS_NOTES = (
    "2 · N_nonembedding · (input + output tokens), the PaLM/Kaplan forward-pass estimate. N counts every "
    "unique parameter not owned by an nn.Embedding module (by module type); a tied lm_head shares the "
    "embedding matrix and is not counted (its 2 · d_model · vocab FLOPs per token are left out), an untied "
    "lm_head is counted. Attention over the context (≈ 2 · n_layers · context · d_model per token) and "
    "KV-cache reads are not included, so long sequences are underestimated. Warmup tokens are excluded."
)


def _logical_numel(p: Any) -> int:
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    if shape is not None:
        return int(math.prod(shape))
    return int(p.numel())


def count_nonembedding_params(model: Any) -> int:
    """Return N_nonembedding of a torch module: unique parameters not owned by Embedding modules (count).

    See the module docstring for the rule (tied lm_head counted zero times, untied counted once).
    """
    import torch

    embedding_types = (torch.nn.Embedding, torch.nn.EmbeddingBag)
    embed_ids: set[int] = set()
    embed_ptrs: set[int] = set()
    for module in model.modules():
        if isinstance(module, embedding_types):
            for p in module.parameters(recurse=False):
                embed_ids.add(id(p))
                if p.device.type != "meta" and p.data_ptr():
                    embed_ptrs.add(p.data_ptr())
    total = 0
    seen: set[int] = set()
    for p in model.parameters():  # already de-duplicates shared Parameter objects
        if id(p) in seen or id(p) in embed_ids:
            continue
        seen.add(id(p))
        if p.device.type != "meta" and p.data_ptr() and p.data_ptr() in embed_ptrs:
            continue  # a separate Parameter object viewing the embedding storage (tied by storage)
        total += _logical_numel(p)
    return total


def estimate_flops(n_params: int, input_tokens: int, output_tokens: int, precision: str | None) -> FlopsResult:
    """Return the FLOPs estimate 2 · n_params · (input_tokens + output_tokens), in FLOPs (not FLOP/s).

    ``n_params``: N_nonembedding (``count_nonembedding_params``); tokens of the measured window only.
    method 'palm_formula', confidence 'medium'. Raises ValueError for negative inputs.
    """
    for name, value in (("n_params", n_params), ("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if value < 0:
            raise ValueError(f"estimate_flops: {name}={value} must be >= 0")
    tokens = input_tokens + output_tokens
    return FlopsResult(
        value=float(2 * n_params * tokens),
        method="palm_formula",
        confidence="medium",
        precision=precision,
        n_params_nonembedding=n_params,
        tokens=tokens,
        notes=FLOPS_NOTES,
    )
