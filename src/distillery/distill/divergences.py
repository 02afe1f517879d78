"""Divergences between teacher and student token distributions, for the KD losses in `losses.py`.

Each takes teacher and student log-probabilities (rows over the same support, possibly containing
-inf for zero probability) and returns one value per row.
"""

import math
from collections.abc import Callable

import torch


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
