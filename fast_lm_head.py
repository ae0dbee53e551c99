"""The LM head's log-prob backward on CPU, in cache-sized row blocks.

TRL's ``ChunkedLogProbFunction`` never holds the ``[tokens, vocabulary]`` logits: its backward
recomputes them a vocabulary chunk at a time and turns each tile into the logits' gradient. On a
device without Triton it does that with about a dozen whole-tile torch ops (``_backward_tile``),
each reading and writing the tile's fp32 copy in memory: for 1,536 completion tokens of a
49,152-token vocabulary that is 1.98 of the backward's 3.09 s on 2 cores (bench/README.md).

``LeanChunkedLogProb`` keeps TRL's forward and, on CPU, folds each tile 32 rows at a time, so the
intermediates stay in cache, with the same arithmetic in the same order as TRL's tile function:
the gradients are bit for bit TRL's (tests/test_fast_logps.py compares them in fp32 and bf16, with
and without an entropy gradient). Elsewhere (CUDA's Triton kernels, a soft-capped head) it is
TRL's backward unchanged.
"""

from __future__ import annotations

import torch
from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE, ChunkedLogProbFunction

ROWS = 32  # x a 32,768-wide chunk in fp32: 4 MB per intermediate, within a core's cache


def _gradient_block(block, targets, log_z, entropy, grad_logprobs, grad_entropy, vocab_start, logit_scale, inv_t):
    """Overwrite ``block`` (rows of the logits tile) with the gradient of the loss by the head's output."""
    log_p = block.float().mul_(logit_scale).mul_(inv_t).sub_(log_z[:, None])
    p = log_p.exp()
    local = targets - vocab_start
    hit = ((local >= 0) & (local < block.shape[1])).nonzero().squeeze(-1)
    p_target = p[hit, local[hit]]
    entropy_term = p.mul(grad_entropy[:, None]).mul_(log_p.add_(entropy[:, None])) if grad_entropy is not None else None
    if grad_logprobs is not None:
        grad = p.mul_(grad_logprobs[:, None]).neg_()  # d log p_target / dz_j = 1[j = target] - p_j
        grad[hit, local[hit]] = grad_logprobs[hit] * (1 - p_target)
        if entropy_term is not None:
            grad.sub_(entropy_term)  # d entropy / dz_j = -p_j (log p_j + entropy)
    elif entropy_term is not None:
        grad = entropy_term.neg_()
    else:
        grad = p.zero_()
    block.copy_(grad.mul_(inv_t).mul_(logit_scale))


class LeanChunkedLogProb(ChunkedLogProbFunction):
    """TRL's chunked log-probs; on CPU its backward folds each tile in row blocks (same arguments)."""

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy, *rest):
        hidden, weight, bias, targets, log_z, entropy = ctx.saved_tensors
        args = ctx.kernel_args
        if hidden.device.type != "cpu" or args["HAS_SOFTCAP"]:
            return ChunkedLogProbFunction.backward(ctx, grad_logprobs, grad_entropy, *rest)
        dtype, chunk = ctx.compute_dtype, ctx.chunk_size
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        # Accumulated in fp32 as TRL does: rounding each chunk's product first would bias training.
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32) if needs_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32) if needs_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32) if needs_bias else None
        g_logp = grad_logprobs.float().contiguous() if grad_logprobs is not None else None
        g_ent = grad_entropy.float().contiguous() if grad_entropy is not None else None
        tile_buf = torch.empty((min(hidden.shape[0], TOKEN_CHUNK_SIZE), chunk), dtype=dtype)
        for t0 in range(0, hidden.shape[0], TOKEN_CHUNK_SIZE):
            t1 = min(t0 + TOKEN_CHUNK_SIZE, hidden.shape[0])
            h = hidden[t0:t1].to(dtype)
            for v0 in range(0, weight.shape[0], chunk):
                v1 = min(v0 + chunk, weight.shape[0])
                w = weight[v0:v1].to(dtype)
                tile = tile_buf[: t1 - t0, : v1 - v0]
                torch.mm(h, w.t(), out=tile)
                if bias is not None:
                    tile.add_(bias[v0:v1].to(dtype))
                for r0 in range(0, t1 - t0, ROWS):
                    r = slice(t0 + r0, min(t0 + r0 + ROWS, t1))
                    _gradient_block(
                        tile[r0 : r0 + ROWS], targets[r], log_z[r], entropy[r],
                        g_logp[r] if g_logp is not None else None, g_ent[r] if g_ent is not None else None,
                        v0, args["logit_scale"], args["inv_t"],
                    )  # fmt: skip
                if grad_hidden is not None:
                    grad_hidden[t0:t1].addmm_(tile.float(), w.float())
                if grad_weight is not None:
                    grad_weight[v0:v1].addmm_(tile.t().float(), h.float())
                if grad_bias is not None:
                    grad_bias[v0:v1] += tile.sum(dim=0, dtype=torch.float32)
        return (
            grad_hidden.to(hidden.dtype) if grad_hidden is not None else None,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
            *([None] * 6),
        )
