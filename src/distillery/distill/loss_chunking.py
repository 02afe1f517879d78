"""The chunking engine under every loss in `losses.py` and `sparse_losses.py`, and their shared helpers.

Plain autograd keeps every chunk's intermediates (softmaxes, log-ratios) alive until
backward, so chunking the forward alone saves little. Instead, each chunk runs its own small
forward + backward inside our forward, writes its gradient into one buffer the shape of the
logits, and frees its scratch. Backward then only scales that buffer, in place, and hands it
on. Checkpointing each chunk instead would also recompute every chunk in backward and, per
chunk, build a second full-size gradient to add into the first; see docs/losses.md for the
measurements.
"""

import torch
from torch.autograd.function import once_differentiable

# Rows of (tokens x vocabulary) processed at once. Scratch memory is a few x chunk x V floats:
# 256 rows keep a 32k-vocabulary loss to about a third of the dense formula's peak (BENCHMARKS.md,
# "KD training"); with a ~150k vocabulary use 64-128.
DEFAULT_CHUNK_SIZE = 256


def _chunk_gradients(logits_2d, rows, row_loss, chunk_size, targets, grad_out):
    """Run `row_loss` chunk by chunk; write each kept row's gradient into `grad_out` (or skip
    gradients when grad_out is None). Returns the detached (values, extras)."""
    values, extras = [], []
    for start in range(0, rows.numel(), chunk_size):
        chunk_rows = rows[start : start + chunk_size]
        with torch.set_grad_enabled(grad_out is not None):
            logit_rows = logits_2d.detach().index_select(0, chunk_rows).requires_grad_(grad_out is not None)
            chunk_values, chunk_extras = row_loss(logit_rows, chunk_rows, *targets)
            if grad_out is not None:
                # Rows are independent, so the gradient of the chunk's sum is every row's own gradient.
                (chunk_grad,) = torch.autograd.grad(chunk_values.sum(), logit_rows)
                grad_out.index_copy_(0, chunk_rows, chunk_grad)
        values.append(chunk_values.detach())
        extras.append(chunk_extras.detach())
    return torch.cat(values), torch.cat(extras)


class _RowwiseLoss(torch.autograd.Function):
    """Per-row losses for selected rows of a 2-D logits matrix, one chunk at a time.

    `row_loss(logit_rows, row_ids, *targets)` must return (values, extras): `values` (n,) is
    differentiated, `extras` (n, k) is for logging only. Each row's value may depend only on its
    own logits row, which holds for per-token losses. Large tensors the loss reads (the
    teacher's logits) come in as `targets`, not through the closure, so that autograd frees
    them together with the logits after backward.
    """

    @staticmethod
    def forward(ctx, logits_2d, rows, row_loss, chunk_size, compute_grad, *targets):
        grad = torch.zeros_like(logits_2d) if compute_grad else None
        values, extras = _chunk_gradients(logits_2d, rows, row_loss, chunk_size, targets, grad)
        ctx.grad, ctx.rows, ctx.row_loss, ctx.chunk_size = grad, rows, row_loss, chunk_size
        # Kept only for a second backward through a retained graph (see backward); autograd
        # frees them after the first backward otherwise. They are all alive during this forward
        # anyway, alongside the gradient buffer, so keeping them does not raise peak memory.
        ctx.save_for_backward(logits_2d, *targets)
        ctx.mark_non_differentiable(extras)
        return values, extras

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values, grad_extras):
        logits_2d, *targets = ctx.saved_tensors
        grad, ctx.grad = ctx.grad, None  # hand the buffer on: autograd may adopt it as .grad
        if grad is None:
            # The buffer was already handed on by an earlier backward (retain_graph=True, or
            # gradcheck): recompute the gradients from the saved logits instead.
            grad = torch.zeros_like(logits_2d)
            _chunk_gradients(logits_2d, ctx.rows, ctx.row_loss, ctx.chunk_size, targets, grad)
        # Scale each kept row by the upstream gradient of its value, in place and chunk by chunk
        # so that no second full-size tensor appears. Rows that were not kept are already 0.
        for start in range(0, ctx.rows.numel(), ctx.chunk_size):
            chunk_rows = ctx.rows[start : start + ctx.chunk_size]
            scale = grad_values[start : start + ctx.chunk_size, None].to(grad.dtype)
            grad.index_copy_(0, chunk_rows, grad.index_select(0, chunk_rows) * scale)
        return (grad, None, None, None, None) + (None,) * len(targets)


def _rowwise(logits, rows, row_loss, chunk_size, *targets):
    """Run `row_loss` over `rows` of `logits` (.., V) in chunks; returns (values, extras)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    logits_2d = logits.reshape(-1, logits.size(-1))
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    if rows.numel() == 0:  # callers turn this into a graph-connected zero
        return logits_2d.new_zeros(0), logits_2d.new_zeros(0, 2)
    return _RowwiseLoss.apply(logits_2d, rows, row_loss, chunk_size, compute_grad, *targets)


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    # Softmaxes in bf16/fp16 lose too much; upcast each chunk (not the whole tensor) to >= fp32.
    return torch.promote_types(tensor.dtype, torch.float32)


def _kept_rows(labels, ignore_index, token_weights):
    """Flat indices of the tokens that carry loss, and their weights (None = all 1)."""
    keep = labels != ignore_index
    if token_weights is not None:
        if token_weights.shape != labels.shape:
            raise ValueError(f"token_weights shape {tuple(token_weights.shape)} != labels shape {tuple(labels.shape)}")
        keep = keep & (token_weights != 0)  # weight 0 means "not trained on": skip the work too
    rows = keep.reshape(-1).nonzero().squeeze(1)
    weights = None if token_weights is None else token_weights.reshape(-1)[rows]
    return rows, weights


def _weighted_mean(per_row, weights):
    if weights is None:
        return per_row.sum() / per_row.numel()
    return (per_row * weights.to(per_row.dtype)).sum() / weights.to(per_row.dtype).sum()


def _check_common(student_logits, labels, alpha, temperature):
    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be (B, T, V), got shape {tuple(student_logits.shape)}")
    if labels.shape != student_logits.shape[:2]:
        raise ValueError(f"labels shape {tuple(labels.shape)} != logits (B, T) {tuple(student_logits.shape[:2])}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if isinstance(alpha, torch.Tensor):
        if alpha.shape != labels.shape:
            raise ValueError(
                f"per-token alpha must have the labels' shape {tuple(labels.shape)}, got {tuple(alpha.shape)}"
            )
    elif not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def _alpha_rows(alpha, rows, dtype):
    if isinstance(alpha, torch.Tensor):
        return alpha.reshape(-1)[rows].to(dtype)
    return alpha


def _label_logprob(logits, labels):
    """log_softmax(logits)[label] per row, without building the (n, V) log-softmax."""
    return logits.gather(1, labels.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=-1)


def _finish(student_logits, per_row, extras, weights, return_components):
    """Weighted mean of per-row losses (+ components); a graph-connected 0 if no token is kept."""
    if per_row.numel() == 0:
        loss = student_logits.sum() * 0.0
        parts = {"hard": 0.0, "soft": 0.0, "tokens": 0}
    else:
        loss = _weighted_mean(per_row, weights)
        if not return_components:
            return loss
        parts = {
            "hard": _weighted_mean(extras[:, 0], weights).item(),
            "soft": _weighted_mean(extras[:, 1], weights).item(),
            "tokens": per_row.numel(),
        }
    return (loss, parts) if return_components else loss
