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
gradient right away (see `loss_chunking.py`). Extra memory is one gradient buffer the size of the
logits (autograd would have to produce it anyway) plus O(chunk_size x V) scratch.

The divergences live in `divergences.py`, the chunking engine in `loss_chunking.py` and the
top-k loss in `sparse_losses.py`; their public names are re-exported here.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from distillery.distill.divergences import (  # noqa: F401  (re-exported: the public import path)
    DIVERGENCES,
    Divergence,
    forward_kl,
    get_divergence,
    jsd,
    reverse_kl,
)
from distillery.distill.loss_chunking import (  # noqa: F401  (DEFAULT_CHUNK_SIZE: re-exported)
    DEFAULT_CHUNK_SIZE,
    _alpha_rows,
    _check_common,
    _compute_dtype,
    _finish,
    _kept_rows,
    _label_logprob,
    _rowwise,
)
from distillery.distill.sparse_losses import TAIL_MODES, sparse_kd_loss  # noqa: F401  (re-exported)

# ---------------------------------------------------------------------------------------------
# Segments: what each token of an agent transcript is. Tokens the student should not be trained
# on (system prompt, user turns, tool results) are SEGMENT_IGNORE.

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
