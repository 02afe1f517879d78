"""KD against sparse teacher targets: per-token top-k ids and log-probabilities, as an
OpenAI-compatible server (vLLM) returns them. The conventions are those of `losses.kd_loss`."""

import math

import torch
import torch.nn.functional as F

from distillery.distill.divergences import get_divergence
from distillery.distill.loss_chunking import (
    DEFAULT_CHUNK_SIZE,
    _alpha_rows,
    _check_common,
    _compute_dtype,
    _finish,
    _kept_rows,
    _rowwise,
)

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
