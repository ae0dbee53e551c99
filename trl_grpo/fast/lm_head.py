"""The LM head's log-probs on CPU, in cache-sized row blocks.

TRL's ``ChunkedLogProbFunction`` never holds the ``[tokens, vocabulary]`` logits: its forward
folds each vocabulary chunk's tile into running log-sum-exp statistics, its backward recomputes
the tile and turns it into the logits' gradient. On a device without Triton each is a string of
whole-tile torch ops, each reading and writing an fp32 copy of the tile in memory, which is most
of the head's time in a CPU GRPO step (figures: bench/README.md, "The LM head in row blocks").

``LeanChunkedLogProb`` folds each tile 32 rows at a time, so the intermediates stay in cache: the
forward calls TRL's own tile function on each block; the backward's block function does TRL's
arithmetic in TRL's order without its one-hot and zero tiles. Outputs and gradients are bit for
bit TRL's (tests/test_fast_logps.py: fp32 and bf16, three vocabularies, each gradient). Off CPU,
or with a soft-capped head, it is TRL's function unchanged.
"""

from __future__ import annotations

import math

import torch
from trl.kernels.chunked_logprob import OPTIONAL_OUTPUTS, TOKEN_CHUNK_SIZE, ChunkedLogProbFunction, _forward_tile

ROWS = 32  # x a 32,768-wide chunk in fp32: 4 MB per intermediate, about what a core's cache holds


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
    """TRL's chunked log-probs; on CPU both passes fold each tile in row blocks (same arguments)."""

    @staticmethod
    def forward(
        ctx, hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0, outputs=None
    ):
        outputs = OPTIONAL_OUTPUTS if outputs is None else outputs
        if hidden.device.type != "cpu" or softcap is not None:
            return ChunkedLogProbFunction.forward(
                ctx, hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, outputs
            )
        ctx.set_materialize_grads(False)
        n, vocab = hidden.shape[0], weight.shape[0]
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        args = {"logit_scale": logit_scale, "softcap": 1.0, "inv_t": 1 / temperature, "HAS_SOFTCAP": False}
        flags = {f"HAS_{name.upper()}": name in outputs for name in OPTIONAL_OUTPUTS}
        # TRL's online-logsumexp statistics: max, sum exp, sum z exp, sum exp^2, sum z, max before the target, target z
        f32 = torch.float32
        stats = [torch.full((n,), -math.inf, dtype=f32), *(torch.zeros(n, dtype=f32) for _ in range(4))]
        stats += [torch.full((n,), -math.inf, dtype=f32), torch.zeros(n, dtype=f32)]
        tile_buf = torch.empty((min(n, TOKEN_CHUNK_SIZE), chunk_size), dtype=dtype)
        for t0 in range(0, n, TOKEN_CHUNK_SIZE):
            t1 = min(t0 + TOKEN_CHUNK_SIZE, n)
            h = hidden[t0:t1].to(dtype)
            for v0 in range(0, vocab, chunk_size):
                v1 = min(v0 + chunk_size, vocab)
                tile = tile_buf[: t1 - t0, : v1 - v0]
                torch.mm(h, weight[v0:v1].to(dtype).t(), out=tile)
                if bias is not None:
                    tile.add_(bias[v0:v1].to(dtype))
                for r0 in range(t0, t1, ROWS):
                    r = slice(r0, min(r0 + ROWS, t1))
                    block = tile[r0 - t0 : r0 - t0 + ROWS]
                    _forward_tile(
                        block,
                        block.stride(0),
                        targets[r],
                        *(s[r] for s in stats),
                        v0,
                        v1 - v0,
                        BLOCK_SIZE=None,
                        **flags,
                        **args,
                    )
        running_max, sum_exp, x_sum_exp, sq_sum_exp, z_sum, max_before_target, target_logit = stats
        log_z = running_max + torch.log(sum_exp)
        entropy = log_z - x_sum_exp / sum_exp if "entropy" in outputs else None
        log_sum_sq = torch.log(sq_sum_exp) - 2 * torch.log(sum_exp) if "log_sum_sq_probs" in outputs else None
        mean_logits = z_sum / vocab if "mean_logits" in outputs else None
        is_top1 = (target_logit >= running_max) & (target_logit > max_before_target) if "is_top1" in outputs else None
        ctx.save_for_backward(hidden, weight, bias, targets, log_z, log_z if entropy is None else entropy)
        ctx.compute_dtype, ctx.chunk_size, ctx.kernel_args = dtype, chunk_size, args
        ctx.mark_non_differentiable(*(x for x in (log_sum_sq, mean_logits, is_top1) if x is not None))
        return target_logit - log_z, entropy, log_sum_sq, mean_logits, is_top1

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
                        tile[r0 : r0 + ROWS],
                        targets[r],
                        log_z[r],
                        entropy[r],
                        g_logp[r] if g_logp is not None else None,
                        g_ent[r] if g_ent is not None else None,
                        v0,
                        args["logit_scale"],
                        args["inv_t"],
                    )
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
