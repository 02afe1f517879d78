"""Knowledge-distillation losses, as pure functions of tensors.

The convention (see docs/losses.md for the full math):

    L = mean over kept tokens of  alpha * CE(z_S, y) + (1 - alpha) * T^2 * D(p_T^T || p_S^T)

where p^T = softmax(z / T), CE is taken at temperature 1 on the hard labels, and D is one of
the divergences in DIVERGENCES (forward KL = KL(teacher || student) by default).

Shapes: logits (B, T, V), labels (B, T) with `ignore_index` (-100) for tokens that carry no
loss. Nothing here shifts labels: the caller aligns logits[:, t] with labels[:, t].

Memory: a (B, T, V) logits tensor is already the biggest thing in a language-model step, so
these losses never build another full-vocabulary tensor for every token. They pick the kept
tokens first, then work through them `chunk_size` rows at a time, computing each chunk's
gradient right away (see _RowwiseLoss). Extra memory is one gradient buffer the size of the
logits (autograd would have to produce it anyway) plus O(chunk_size x V) scratch.
"""

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# ---------------------------------------------------------------------------------------------
# Segments: what each token of an agent transcript is. Tokens the student should not be trained
# on (system prompt, user turns, tool results) are SEGMENT_IGNORE.

# Rows of (tokens x vocabulary) processed at once. Scratch memory is a few x chunk x V floats:
# 256 rows keep a 32k-vocabulary loss to about a third of the dense formula's peak (BENCHMARKS.md,
# "KD training"); with a ~150k vocabulary use 64-128.
DEFAULT_CHUNK_SIZE = 256

SEGMENT_IGNORE = 0
SEGMENT_REASONING = 1
SEGMENT_TOOL_CALL = 2
SEGMENT_FINAL_ANSWER = 3

SEGMENTS = {
    "ignore": SEGMENT_IGNORE,
    "reasoning": SEGMENT_REASONING,
    "tool_call": SEGMENT_TOOL_CALL,
    "final_answer": SEGMENT_FINAL_ANSWER,
}


def segment_weights(
    segment_ids: torch.Tensor,
    weights: Mapping[str | int, float],
    *,
    default: float = 0.0,
) -> torch.Tensor:
    """Map per-token segment ids to per-token float values.

    `weights` is keyed by segment name ("tool_call") or id (2). Segments it does not name get
    `default`, so `segment_weights(seg, {"reasoning": 1, "tool_call": 2})` gives prompt and
    tool-result tokens weight 0. Use the result as `token_weights` (how much each token counts)
    or as a per-token `alpha` (how much of each token's loss is hard CE), e.g. a higher alpha
    on tool-call tokens, where the exact string matters, than on reasoning tokens.
    """
    values = torch.full(segment_ids.shape, float(default), dtype=torch.float32, device=segment_ids.device)
    for key, value in weights.items():
        if isinstance(key, str):
            if key not in SEGMENTS:
                raise ValueError(f"unknown segment {key!r}; choose one of: {', '.join(SEGMENTS)}")
            key = SEGMENTS[key]
        values[segment_ids == key] = float(value)
    return values


# ---------------------------------------------------------------------------------------------
# Divergences. Each takes teacher and student log-probabilities (rows over the same support,
# possibly containing -inf for zero probability) and returns one value per row.


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p (log p - log q) per row, with 0 log 0 = 0.

    Entries where p is 0 are zeroed *before* the multiply, so a -inf in log p or log q there
    gives neither a NaN value nor a NaN gradient.
    """
    p = log_p.exp()
    log_ratio = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))
    return (p * log_ratio).sum(-1)


def forward_kl(teacher_logprobs: torch.Tensor, student_logprobs: torch.Tensor, *, beta: float = 0.5) -> torch.Tensor:
    """KL(teacher || student): mean-seeking, the student must cover all of the teacher's mass.

    `beta` is unused; every divergence takes it so that they share one signature.
    """
    # Written as sum p log p - sum p log q rather than via _kl: this is the default, hot path, and
    # this form keeps only p (n, V) for backward instead of p and log p - log q. The clamp turns a
    # -inf student log-prob into a huge finite one so that p = 0 there gives 0, not NaN.
    p = teacher_logprobs.exp()
    neg_entropy = torch.xlogy(p, p).sum(-1)  # sum p log p, with 0 log 0 = 0
    lowest = torch.finfo(student_logprobs.dtype).min
    cross = (p * student_logprobs.clamp(min=lowest)).sum(-1)
    return neg_entropy - cross


def reverse_kl(teacher_logprobs: torch.Tensor, student_logprobs: torch.Tensor, *, beta: float = 0.5) -> torch.Tensor:
    """KL(student || teacher): mode-seeking, the student may drop some of the teacher's modes."""
    return _kl(student_logprobs, teacher_logprobs)


def jsd(teacher_logprobs: torch.Tensor, student_logprobs: torch.Tensor, *, beta: float = 0.5) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence, as in GKD (Agarwal et al., 2024) and TRL.

        M = beta * p_teacher + (1 - beta) * p_student
        JSD_beta = beta * KL(p_teacher || M) + (1 - beta) * KL(p_student || M)

    beta = 0.5 is the ordinary JS divergence (symmetric, at most log 2). For small beta,
    JSD_beta ~ beta * KL(teacher || student); for beta near 1, ~ (1 - beta) * KL(student || teacher).
    At the endpoints the formula itself is 0, so, like TRL, we return the limit *direction* there:
    beta = 0 gives exactly forward_kl and beta = 1 exactly reverse_kl (not scaled by beta).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"jsd needs 0 <= beta <= 1, got {beta}")
    if beta == 0.0:
        return forward_kl(teacher_logprobs, student_logprobs)
    if beta == 1.0:
        return reverse_kl(teacher_logprobs, student_logprobs)
    # logaddexp(-inf, -inf) has a NaN gradient; clamping -inf to the most negative finite float
    # changes no value (its exp is still 0) and gives those entries a zero gradient instead.
    lowest = torch.finfo(teacher_logprobs.dtype).min
    log_mixture = torch.logaddexp(
        teacher_logprobs.clamp(min=lowest) + math.log(beta),
        student_logprobs.clamp(min=lowest) + math.log1p(-beta),
    )
    return beta * _kl(teacher_logprobs, log_mixture) + (1.0 - beta) * _kl(student_logprobs, log_mixture)


Divergence = Callable[..., torch.Tensor]

# Add new divergences here: fn(teacher_logprobs, student_logprobs, *, beta) -> per-row values.
DIVERGENCES: dict[str, Divergence] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
}


def get_divergence(name: str) -> Divergence:
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; choose one of: {', '.join(sorted(DIVERGENCES))}")
    return DIVERGENCES[name]


# ---------------------------------------------------------------------------------------------
# The chunking engine.
#
# Plain autograd keeps every chunk's intermediates (softmaxes, log-ratios) alive until
# backward, so chunking the forward alone saves little. Instead, each chunk runs its own small
# forward + backward inside our forward, writes its gradient into one buffer the shape of the
# logits, and frees its scratch. Backward then only scales that buffer, in place, and hands it
# on. Checkpointing each chunk instead would also recompute every chunk in backward and, per
# chunk, build a second full-size gradient to add into the first; see docs/losses.md for the
# measurements.


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


# ---------------------------------------------------------------------------------------------
# Public losses.


def hard_ce(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    weights: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Cross entropy on hard labels: (weighted) mean over tokens whose label != ignore_index.

    With `weights` (B, T) the mean is sum(w * CE) / sum(w) over kept tokens, and weight-0
    tokens are dropped like ignored ones.
    """
    _check_common(student_logits, labels, 1.0, 1.0)
    rows, row_weights = _kept_rows(labels, ignore_index, weights)
    flat_labels = labels.reshape(-1)
    dtype = _compute_dtype(student_logits)

    def row_loss(logit_rows, row_ids):
        ce = -_label_logprob(logit_rows.to(dtype), flat_labels[row_ids])
        return ce, torch.stack([ce, torch.zeros_like(ce)], dim=1)

    per_row, extras = _rowwise(student_logits, rows, row_loss, chunk_size)
    return _finish(student_logits, per_row, extras, row_weights, return_components=False)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float | torch.Tensor,
    temperature: float,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    ignore_index: int = -100,
    token_weights: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    return_components: bool = False,
):
    """Dense KD loss: mean over kept tokens of alpha*CE + (1-alpha)*T^2*D(p_T^T || p_S^T).

    student_logits, teacher_logits: (B, T, V), same V (slice a padded vocabulary first).
    labels: (B, T); tokens equal to ignore_index carry no loss.
    alpha: a float in [0, 1], or a (B, T) tensor for a per-token mix (see segment_weights).
    temperature: T > 0. Both distributions are softened with it; CE is always at T = 1.
    divergence: a key of DIVERGENCES; beta is passed to it (only "jsd" uses it).
    token_weights: optional (B, T); the mean becomes sum(w * loss) / sum(w), weight-0 tokens
        are skipped.
    chunk_size: tokens per chunk; extra memory is O(chunk_size * V) plus one logits-sized
        gradient buffer. The result does not depend on it (up to float rounding).
    return_components: also return {"hard": mean CE, "soft": mean T^2*D, "tokens": n} as
        Python numbers, for logging.

    The teacher is a constant: no gradient flows into teacher_logits.
    """
    _check_common(student_logits, labels, alpha, temperature)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits shape {tuple(teacher_logits.shape)} != student_logits shape "
            f"{tuple(student_logits.shape)} (slice both to the shared vocabulary first)"
        )
    divergence_fn = get_divergence(divergence)
    rows, row_weights = _kept_rows(labels, ignore_index, token_weights)
    flat_labels = labels.reshape(-1)
    flat_teacher = teacher_logits.detach().reshape(-1, teacher_logits.size(-1))
    dtype = _compute_dtype(student_logits)
    t2 = temperature * temperature

    def row_loss(logit_rows, row_ids, flat_teacher):
        student = logit_rows.to(dtype)
        hard = -_label_logprob(student, flat_labels[row_ids])
        student_logprobs = F.log_softmax(student / temperature if temperature != 1.0 else student, dim=-1)
        with torch.no_grad():  # the teacher is a constant; keep its intermediates out of the graph
            teacher_logprobs = F.log_softmax(flat_teacher[row_ids].to(dtype) / temperature, dim=-1)
        # T^2 keeps the soft gradient's scale independent of T (Hinton et al., 2015): the
        # gradient of D w.r.t. the logits shrinks like 1/T^2 for large T.
        soft = t2 * divergence_fn(teacher_logprobs, student_logprobs, beta=beta)
        a = _alpha_rows(alpha, row_ids, dtype)
        return a * hard + (1.0 - a) * soft, torch.stack([hard, soft], dim=1)

    per_row, extras = _rowwise(student_logits, rows, row_loss, chunk_size, flat_teacher)
    return _finish(student_logits, per_row, extras, row_weights, return_components)


TAIL_MODES = ("bucket", "renormalize")


def sparse_kd_loss(
    student_logits: torch.Tensor,
    topk_indices: torch.Tensor,
    topk_logprobs: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float | torch.Tensor,
    temperature: float,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    tail: str = "bucket",
    ignore_index: int = -100,
    token_weights: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    min_tail_mass: float = 1e-6,
    return_components: bool = False,
):
    """KD against sparse teacher targets: per-token top-k ids and their log-probabilities.

    topk_indices: (B, T, k) integer token ids, distinct within a token.
    topk_logprobs: (B, T, k) the teacher's log-probabilities of those ids at temperature 1, as
        an OpenAI-compatible server (vLLM) returns them.
    tail: what to do with the teacher mass outside the top k.
      "bucket": one extra outcome. The teacher's tail mass is 1 - sum(exp(topk_logprobs)),
        floored at min_tail_mass (served logprobs are rounded, so a tail of 0 or below is noise,
        and an exact 0 would make reverse KL infinite); the student's is its exact probability
        outside the k ids. When the k ids cover the whole vocabulary there is no tail.
      "renormalize": drop the tail; teacher and student are both renormalised over the k ids.
    Temperature: the (k [+1])-outcome distributions of teacher and student are formed at T = 1
    first, then both are softened the same way, p^T(i) ∝ p(i)^(1/T) over those outcomes (the
    bucket counts as one outcome). With k = V this is exactly kd_loss; at T = 1 it is the exact
    divergence between the collapsed distributions.

    Everything else (alpha, T^2, weights, chunking, return_components) is as in kd_loss.
    """
    _check_common(student_logits, labels, alpha, temperature)
    if tail not in TAIL_MODES:
        raise ValueError(f"unknown tail mode {tail!r}; choose one of: {', '.join(TAIL_MODES)}")
    if topk_indices.shape != topk_logprobs.shape or topk_indices.shape[:2] != labels.shape:
        raise ValueError(
            f"topk_indices {tuple(topk_indices.shape)} and topk_logprobs {tuple(topk_logprobs.shape)} "
            f"must both be (B, T, k) with (B, T) = {tuple(labels.shape)}"
        )
    divergence_fn = get_divergence(divergence)
    vocab, k = student_logits.size(-1), topk_indices.size(-1)
    covers_vocab = k >= vocab  # distinct ids: then nothing is left for a tail
    rows, row_weights = _kept_rows(labels, ignore_index, token_weights)
    flat_labels = labels.reshape(-1)
    flat_indices = topk_indices.reshape(-1, k).long()
    flat_teacher = topk_logprobs.detach().reshape(-1, k)
    dtype = _compute_dtype(student_logits)
    t2 = temperature * temperature

    def row_loss(logit_rows, row_ids, flat_indices, flat_teacher):
        student = logit_rows.to(dtype)
        log_normalizer = torch.logsumexp(student, dim=-1, keepdim=True)
        hard = log_normalizer.squeeze(1) - student.gather(1, flat_labels[row_ids].unsqueeze(1)).squeeze(1)
        ids = flat_indices[row_ids]
        student_top = student.gather(1, ids) - log_normalizer  # (n, k) log-probs at T = 1
        teacher_top = flat_teacher[row_ids].to(dtype)

        if tail == "bucket":
            student_tail, teacher_tail = _tail_logprobs(
                student, log_normalizer.squeeze(1), ids, teacher_top, covers_vocab, min_tail_mass
            )
            student_top = torch.cat([student_top, student_tail.unsqueeze(1)], dim=1)
            teacher_top = torch.cat([teacher_top, teacher_tail.unsqueeze(1)], dim=1)

        # Renormalise (and temper) over the shared support. For the teacher this also absorbs
        # rounding in the served logprobs.
        student_support = F.log_softmax(student_top / temperature, dim=-1)
        teacher_support = F.log_softmax(teacher_top / temperature, dim=-1)
        soft = t2 * divergence_fn(teacher_support, student_support, beta=beta)
        a = _alpha_rows(alpha, row_ids, dtype)
        return a * hard + (1.0 - a) * soft, torch.stack([hard, soft], dim=1)

    per_row, extras = _rowwise(student_logits, rows, row_loss, chunk_size, flat_indices, flat_teacher)
    return _finish(student_logits, per_row, extras, row_weights, return_components)


def _tail_logprobs(student_logits, log_normalizer, ids, teacher_top, covers_vocab, min_tail_mass):
    """Log of the probability outside `ids`, for student (exact) and teacher (1 - top-k mass)."""
    n = student_logits.size(0)
    if covers_vocab:
        no_tail = torch.full((n,), -math.inf, dtype=student_logits.dtype, device=student_logits.device)
        return no_tail, no_tail
    # Student: logsumexp over the logits *outside* ids, minus the full logsumexp. Computing it as
    # log(1 - sum of top-k probs) would lose all precision when the tail is tiny.
    outside = student_logits.scatter(1, ids, -math.inf)
    student_tail = torch.logsumexp(outside, dim=-1) - log_normalizer
    teacher_mass = 1.0 - teacher_top.exp().sum(-1)
    teacher_tail = teacher_mass.clamp(min=min_tail_mass).log()
    return student_tail, teacher_tail


def sequence_logprob(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Summed log-probability of each sequence's labels: (B, T, V), (B, T) -> (B,).

    Tokens equal to ignore_index are skipped (no shifting is done). Used to score whole
    actions, e.g. the student's log-likelihood of a canonical tool call.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"need logits (B, T, V) and labels (B, T), got {tuple(logits.shape)}, {tuple(labels.shape)}")
    rows, _ = _kept_rows(labels, ignore_index, None)
    flat_labels = labels.reshape(-1)
    dtype = _compute_dtype(logits)

    def row_loss(logit_rows, row_ids):
        token_logprob = _label_logprob(logit_rows.to(dtype), flat_labels[row_ids])
        return token_logprob, token_logprob.unsqueeze(1)

    totals = torch.zeros(labels.size(0), dtype=dtype, device=logits.device)
    if rows.numel() == 0:
        return totals + logits.sum() * 0.0
    token_logprobs, _ = _rowwise(logits, rows, row_loss, chunk_size)
    return totals.index_add(0, rows // labels.size(1), token_logprobs)


def action_distribution_loss(
    action_logprobs_student: torch.Tensor,
    teacher_probs: torch.Tensor,
    action_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross entropy from the teacher's action distribution to the student: sum_a p_T(a) * NLL_S(a).

    action_logprobs_student: (num_states, num_actions), the student's summed sequence
        log-probability of each canonical action (e.g. from sequence_logprob).
    teacher_probs: (num_states, num_actions), p_T(a), e.g. the fraction of k teacher samples
        whose canonical tool call is a. Used as given (not renormalised).
    action_mask: (num_states, num_actions) bool, False for padding. Default: all True.

    Returns the mean over states that have at least one real action. Per state,
        sum_a p_T(a) * (-log q_S(a)) = KL(p_T || q_S) + H(p_T),
    and H(p_T) does not depend on the student, so this is KL(teacher || student) over actions
    up to a constant (exactly that KL when p_T sums to 1 and lives on these actions).
    """
    if action_logprobs_student.shape != teacher_probs.shape or action_logprobs_student.dim() != 2:
        raise ValueError(
            f"need (num_states, num_actions) for both, got {tuple(action_logprobs_student.shape)} "
            f"and {tuple(teacher_probs.shape)}"
        )
    if action_mask is None:
        action_mask = torch.ones_like(teacher_probs, dtype=torch.bool)
    teacher_probs = teacher_probs.detach().to(action_logprobs_student.dtype)
    real = action_mask & (teacher_probs > 0)
    # Zero padded entries before multiplying: padding may hold -inf log-probs.
    safe_logprobs = torch.where(real, action_logprobs_student, torch.zeros_like(action_logprobs_student))
    per_state = -(torch.where(real, teacher_probs, torch.zeros_like(teacher_probs)) * safe_logprobs).sum(-1)
    has_action = action_mask.any(-1)
    if not has_action.any():
        return action_logprobs_student.sum() * 0.0
    return per_state[has_action].mean()
