"""Tests for distillery.distill.losses: values, gradients, masking, chunking, sparse targets."""

import math

import pytest
import torch
import torch.nn.functional as F

from distillery.distill.losses import (
    DIVERGENCES,
    SEGMENT_FINAL_ANSWER,
    SEGMENT_IGNORE,
    SEGMENT_REASONING,
    SEGMENT_TOOL_CALL,
    action_distribution_loss,
    forward_kl,
    hard_ce,
    jsd,
    kd_loss,
    reverse_kl,
    segment_weights,
    sequence_logprob,
    sparse_kd_loss,
)

DIVERGENCE_NAMES = sorted(DIVERGENCES)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These tensors are tiny: on a shared, busy machine, intra-op thread pools cost far more
    # (milliseconds per softmax) than they save.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batch(B=2, T=6, V=11, *, seed=0, scale=1.0, dtype=torch.float64, n_ignored=2):
    g = torch.Generator().manual_seed(seed)
    student = (scale * torch.randn(B, T, V, generator=g, dtype=dtype)).requires_grad_()
    teacher = scale * torch.randn(B, T, V, generator=g, dtype=dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :n_ignored] = -100  # a prompt
    return student, teacher, labels


# Reference implementations, written the obvious unchunked way over the kept tokens.


def ref_divergence(name, log_pt, log_ps, beta=0.5):
    pt, ps = log_pt.exp(), log_ps.exp()
    if name == "forward_kl":
        return (pt * (log_pt - log_ps)).sum(-1)
    if name == "reverse_kl":
        return (ps * (log_ps - log_pt)).sum(-1)
    m = beta * pt + (1 - beta) * ps
    return beta * (pt * (log_pt - m.log())).sum(-1) + (1 - beta) * (ps * (log_ps - m.log())).sum(-1)


def ref_kd(student, teacher, labels, alpha, T, name="forward_kl", beta=0.5):
    keep = labels != -100
    s, t, y = student[keep], teacher[keep], labels[keep]
    ce = F.cross_entropy(s, y, reduction="none")
    d = ref_divergence(name, F.log_softmax(t / T, -1), F.log_softmax(s / T, -1), beta)
    a = alpha[keep] if isinstance(alpha, torch.Tensor) else alpha
    return (a * ce + (1 - a) * T * T * d).mean()


# --- values -----------------------------------------------------------------------------------


def test_hand_computed_tiny_case():
    # One token, V = 2. Teacher (1/2, 1/2), student (1/4, 3/4), label 0, T = 1.
    student = torch.tensor([[[math.log(0.25), math.log(0.75)]]], dtype=torch.float64)
    teacher = torch.tensor([[[0.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[0]])
    ce = math.log(4.0)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = 0.5 * log(4/3)
    assert kl == pytest.approx(0.5 * math.log(4 / 3))
    loss, parts = kd_loss(student, teacher, labels, alpha=0.5, temperature=1.0, return_components=True)
    assert loss.item() == pytest.approx(0.5 * ce + 0.5 * kl, abs=1e-12)
    assert parts == {"hard": pytest.approx(ce), "soft": pytest.approx(kl), "tokens": 1}
    rev = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    loss = kd_loss(student, teacher, labels, alpha=0.0, temperature=1.0, divergence="reverse_kl")
    assert loss.item() == pytest.approx(rev, abs=1e-12)
    # T = 2 tempers both sides: teacher stays uniform, student becomes (1, sqrt 3) / (1 + sqrt 3).
    q = torch.tensor([1.0, math.sqrt(3.0)], dtype=torch.float64)
    q = q / q.sum()
    kl_t2 = (0.5 * (0.5 / q).log()).sum().item()
    loss = kd_loss(student, teacher, labels, alpha=0.0, temperature=2.0)
    assert loss.item() == pytest.approx(4.0 * kl_t2, abs=1e-12)


@pytest.mark.parametrize("T", [1.0, 2.0, 3.5])
def test_forward_kl_matches_torch_kl_div(T):
    student, teacher, labels = make_batch()
    keep = labels != -100
    log_q, log_p = F.log_softmax(student[keep] / T, -1), F.log_softmax(teacher[keep] / T, -1)
    expected = T * T * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    loss = kd_loss(student, teacher, labels, alpha=0.0, temperature=T)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_each_divergence_matches_reference(name):
    student, teacher, labels = make_batch(seed=1)
    loss = kd_loss(student, teacher, labels, alpha=0.3, temperature=2.0, divergence=name, beta=0.3)
    torch.testing.assert_close(loss, ref_kd(student, teacher, labels, 0.3, 2.0, name, beta=0.3), rtol=1e-10, atol=1e-12)


def test_alpha_one_is_exactly_cross_entropy():
    student, teacher, labels = make_batch(seed=2)
    loss = kd_loss(student, teacher, labels, alpha=1.0, temperature=3.0)
    assert torch.equal(loss, hard_ce(student, labels))
    torch.testing.assert_close(loss, F.cross_entropy(student.flatten(0, 1), labels.flatten()), rtol=1e-12, atol=0)


def test_alpha_zero_is_pure_scaled_kd():
    student, teacher, labels = make_batch(seed=3)
    loss, parts = kd_loss(student, teacher, labels, alpha=0.0, temperature=4.0, return_components=True)
    keep = labels != -100
    kl = ref_divergence("forward_kl", F.log_softmax(teacher[keep] / 4, -1), F.log_softmax(student[keep] / 4, -1))
    torch.testing.assert_close(loss, 16.0 * kl.mean(), rtol=1e-10, atol=0)
    assert parts["soft"] == pytest.approx(loss.item())
    assert parts["tokens"] == int(keep.sum())


# --- masking and segments ---------------------------------------------------------------------


def test_ignored_labels_do_not_contribute():
    student, teacher, labels = make_batch(seed=4)
    loss = kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    loss.backward()
    ignored = labels == -100
    assert torch.all(student.grad[ignored] == 0)
    # Scrambling ignored positions, on both sides, changes nothing.
    student2 = student.detach().clone()
    teacher2 = teacher.clone()
    student2[ignored] = 100 * torch.randn_like(student2[ignored])
    teacher2[ignored] = -50.0
    assert torch.equal(kd_loss(student2, teacher2, labels, alpha=0.5, temperature=2.0), loss.detach())


def test_no_kept_tokens_gives_connected_zero():
    student, teacher, labels = make_batch(seed=5)
    labels[:] = -100
    loss, parts = kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0, return_components=True)
    loss.backward()
    assert loss.item() == 0.0 and parts["tokens"] == 0
    assert torch.all(student.grad == 0)


def test_segment_weights_mapping():
    seg = torch.tensor([[0, 1, 1, 2, 2, 3]])
    w = segment_weights(seg, {"reasoning": 0.5, SEGMENT_TOOL_CALL: 2.0, "final_answer": 1.0})
    assert w.tolist() == [[0.0, 0.5, 0.5, 2.0, 2.0, 1.0]]
    assert segment_weights(seg, {"tool_call": 1.0}, default=0.25).tolist() == [[0.25, 0.25, 0.25, 1.0, 1.0, 0.25]]
    with pytest.raises(ValueError, match="tool_call"):
        segment_weights(seg, {"toolcall": 1.0})


def test_segment_mask_excludes_prompt_and_tool_results():
    student, teacher, labels = make_batch(B=2, T=8, seed=6, n_ignored=0)
    seg = torch.tensor(
        [
            [SEGMENT_IGNORE, SEGMENT_IGNORE, SEGMENT_REASONING, SEGMENT_REASONING, SEGMENT_TOOL_CALL,
             SEGMENT_IGNORE, SEGMENT_IGNORE, SEGMENT_FINAL_ANSWER],
            [SEGMENT_IGNORE, SEGMENT_REASONING, SEGMENT_TOOL_CALL, SEGMENT_TOOL_CALL, SEGMENT_IGNORE,
             SEGMENT_REASONING, SEGMENT_TOOL_CALL, SEGMENT_FINAL_ANSWER],
        ]
    )
    weights = segment_weights(seg, {"reasoning": 1.0, "tool_call": 1.0, "final_answer": 1.0})
    masked = kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0, token_weights=weights)
    expected = kd_loss(student, teacher, labels.masked_fill(seg == SEGMENT_IGNORE, -100), alpha=0.5, temperature=2.0)
    torch.testing.assert_close(masked, expected, rtol=1e-12, atol=0)
    masked.backward()
    assert torch.all(student.grad[seg == SEGMENT_IGNORE] == 0)

    # Weighted mean: tool calls count double.
    weights = segment_weights(seg, {"reasoning": 1.0, "tool_call": 2.0, "final_answer": 1.0})
    loss = kd_loss(student, teacher, labels, alpha=0.0, temperature=1.0, token_weights=weights)
    per_token = ref_divergence("forward_kl", F.log_softmax(teacher, -1), F.log_softmax(student, -1))
    torch.testing.assert_close(loss, (weights * per_token).sum() / weights.sum(), rtol=1e-10, atol=0)


def test_per_token_alpha_from_segments():
    student, teacher, labels = make_batch(B=1, T=6, seed=7, n_ignored=1)
    seg = torch.tensor([[0, 1, 1, 2, 2, 3]])
    alpha = segment_weights(seg, {"reasoning": 0.2, "tool_call": 0.9, "final_answer": 0.5}).double()
    loss = kd_loss(student, teacher, labels, alpha=alpha, temperature=2.0)
    torch.testing.assert_close(loss, ref_kd(student, teacher, labels, alpha, 2.0), rtol=1e-10, atol=0)
    # A constant alpha tensor is the same as the float.
    const = torch.full(labels.shape, 0.3, dtype=torch.float64)
    torch.testing.assert_close(
        kd_loss(student, teacher, labels, alpha=const, temperature=2.0),
        kd_loss(student, teacher, labels, alpha=0.3, temperature=2.0),
        rtol=1e-12,
        atol=0,
    )


# --- gradients, T^2, chunking -----------------------------------------------------------------


@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_gradcheck_dense(name):
    student, teacher, labels = make_batch(B=2, T=3, V=5, seed=8, n_ignored=1)
    alpha = torch.tensor([[0.0, 0.3, 1.0], [0.5, 0.5, 0.9]], dtype=torch.float64)

    def f(s):
        return kd_loss(s, teacher, labels, alpha=alpha, temperature=1.7, divergence=name, chunk_size=2)

    assert torch.autograd.gradcheck(f, (student,))


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_gradcheck_sparse(name, tail):
    student, teacher, labels = make_batch(B=2, T=3, V=7, seed=9, n_ignored=1)
    topk_logprobs, topk_indices = F.log_softmax(teacher, -1).topk(3, dim=-1)

    def f(s):
        return sparse_kd_loss(
            s, topk_indices, topk_logprobs, labels, alpha=0.4, temperature=1.5, divergence=name, tail=tail, chunk_size=2
        )

    assert torch.autograd.gradcheck(f, (student,))


def test_gradcheck_sequence_logprob_and_ce():
    student, _, labels = make_batch(B=2, T=4, V=5, seed=10, n_ignored=1)
    assert torch.autograd.gradcheck(lambda s: sequence_logprob(s, labels, chunk_size=3), (student,))
    weights = torch.rand(labels.shape, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: hard_ce(s, labels, weights=weights, chunk_size=3), (student,))


def test_t_squared_keeps_soft_gradient_scale():
    # Small logit differences, so that the high-T expansion (gradient ~ 1/T^2) applies.
    student, teacher, labels = make_batch(B=4, T=8, V=50, seed=11, scale=0.5, n_ignored=0)
    scaled, unscaled = [], []
    for T in [1.0, 2.0, 4.0, 8.0]:
        (grad,) = torch.autograd.grad(kd_loss(student, teacher, labels, alpha=0.0, temperature=T), student)
        scaled.append(grad.norm().item())
        unscaled.append(grad.norm().item() / T**2)  # the same loss without the T^2 factor
    assert max(scaled) / min(scaled) < 2.0
    for T, g in zip([2.0, 4.0, 8.0], unscaled[1:]):
        ratio = g / unscaled[0]
        assert 0.4 / T**2 < ratio < 2.5 / T**2  # shrinks like 1/T^2
    assert unscaled[0] / unscaled[-1] > 20


@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_chunked_equals_unchunked(name):
    student, teacher, labels = make_batch(B=3, T=7, V=13, seed=12)
    weights = torch.rand(labels.shape, dtype=torch.float64)
    results = []
    for chunk_size in [1, 4, 10_000]:
        loss, parts = kd_loss(
            student, teacher, labels, alpha=0.4, temperature=2.0, divergence=name,
            token_weights=weights, chunk_size=chunk_size, return_components=True,
        )
        (grad,) = torch.autograd.grad(loss, student)
        results.append((loss, grad, parts))
    for loss, grad, parts in results[:-1]:
        torch.testing.assert_close(loss, results[-1][0], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, results[-1][1], rtol=1e-12, atol=1e-14)
        assert parts == pytest.approx(results[-1][2])

    topk_logprobs, topk_indices = F.log_softmax(teacher, -1).topk(4, dim=-1)
    sparse = [
        sparse_kd_loss(
            student, topk_indices, topk_logprobs, labels, alpha=0.4, temperature=2.0, divergence=name, chunk_size=c
        )
        for c in (1, 10_000)
    ]
    torch.testing.assert_close(sparse[0], sparse[1], rtol=1e-12, atol=1e-14)


def test_float32_and_bfloat16_inputs():
    student, teacher, labels = make_batch(seed=13, dtype=torch.float32)
    loss32 = kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    loss32.backward()
    assert student.grad.dtype == torch.float32 and torch.isfinite(student.grad).all()
    s16 = student.detach().bfloat16().requires_grad_()
    loss16 = kd_loss(s16, teacher.bfloat16(), labels, alpha=0.5, temperature=2.0)
    loss16.backward()
    assert loss16.dtype == torch.float32  # chunks are upcast before the softmax
    assert s16.grad.dtype == torch.bfloat16
    assert loss16.item() == pytest.approx(loss32.item(), rel=2e-2)


def test_retained_graph_backward_twice_and_no_grad_mode():
    student, teacher, labels = make_batch(seed=14)
    loss = kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0, chunk_size=3)
    (first,) = torch.autograd.grad(loss, student, retain_graph=True)  # hands the buffer on
    (second,) = torch.autograd.grad(2.0 * loss, student)  # recomputed from the saved logits
    torch.testing.assert_close(second, 2.0 * first, rtol=1e-12, atol=0)
    with torch.no_grad():
        assert kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0).item() == pytest.approx(loss.item())


class _Saved:
    """What a saved_tensors_hooks pack returns: alive exactly as long as the graph keeps it."""

    def __init__(self, tensor):
        self.tensor = tensor


def _saved_by_graph(fn):
    """Run fn() and return the tensors that its autograd graph still holds for backward."""
    import weakref

    holders = []

    def pack(tensor):
        holder = _Saved(tensor)
        holders.append(weakref.ref(holder))
        return holder

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda holder: holder.tensor):
        out = fn()
    return out, [ref().tensor for ref in holders if ref() is not None]


def test_graph_keeps_no_full_vocabulary_intermediates():
    # Each chunk's softmaxes live only inside the chunk. What the graph keeps for backward must
    # be the caller's own logits (kept for a retained-graph second backward), nothing new.
    student, teacher, labels = make_batch(B=2, T=16, V=40, seed=21, n_ignored=4)
    inputs = {student.untyped_storage().data_ptr(), teacher.untyped_storage().data_ptr()}
    for fn in [
        lambda: kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0, divergence="jsd", chunk_size=4),
        lambda: sparse_kd_loss(student, *F.log_softmax(teacher, -1).topk(5, dim=-1)[::-1], labels,
                               alpha=0.5, temperature=2.0, chunk_size=4),
    ]:
        loss, saved = _saved_by_graph(fn)
        big = [t for t in saved if t.numel() > 4 * 40 and t.untyped_storage().data_ptr() not in inputs]
        assert big == []
        assert any(t.untyped_storage().data_ptr() == student.untyped_storage().data_ptr() for t in saved)
        loss.backward()


def test_saved_teacher_is_released_after_backward():
    student, teacher, labels = make_batch(seed=22)
    loss = kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    node, todo = None, [loss.grad_fn]
    while todo:  # find our chunked-loss node in the graph
        fn = todo.pop()
        if "RowwiseLoss" in type(fn).__name__:
            node = fn
        todo += [next_fn for next_fn, _ in fn.next_functions if next_fn is not None]
    teacher_ptr = teacher.untyped_storage().data_ptr()
    assert any(t.untyped_storage().data_ptr() == teacher_ptr for t in node.saved_tensors)
    loss.backward()
    with pytest.raises(RuntimeError):  # freed by the (non-retained) backward, though `loss` lives
        node.saved_tensors


# --- divergences ------------------------------------------------------------------------------


def test_jsd_beta_edge_cases():
    g = torch.Generator().manual_seed(15)
    log_pt = F.log_softmax(2 * torch.randn(4, 9, generator=g, dtype=torch.float64), -1)
    log_ps = F.log_softmax(2 * torch.randn(4, 9, generator=g, dtype=torch.float64), -1)
    fwd, rev = forward_kl(log_pt, log_ps), reverse_kl(log_pt, log_ps)
    # The endpoints are the KL directions themselves (TRL's convention), not the vanishing formula.
    assert torch.equal(jsd(log_pt, log_ps, beta=0.0), fwd)
    assert torch.equal(jsd(log_pt, log_ps, beta=1.0), rev)
    # Near the endpoints the formula approaches beta * forward KL and (1 - beta) * reverse KL.
    eps = 1e-5
    torch.testing.assert_close(jsd(log_pt, log_ps, beta=eps) / eps, fwd, rtol=1e-3, atol=0)
    torch.testing.assert_close(jsd(log_pt, log_ps, beta=1 - eps) / eps, rev, rtol=1e-3, atol=0)
    # beta = 1/2 is the ordinary JS divergence: symmetric, in [0, log 2].
    half = jsd(log_pt, log_ps, beta=0.5)
    torch.testing.assert_close(half, jsd(log_ps, log_pt, beta=0.5), rtol=1e-12, atol=0)
    assert torch.all(half > 0) and torch.all(half <= math.log(2))
    assert torch.allclose(jsd(log_pt, log_pt, beta=0.3), torch.zeros(4, dtype=torch.float64), atol=1e-15)
    with pytest.raises(ValueError, match="beta"):
        jsd(log_pt, log_ps, beta=1.5)


def test_reverse_kl_differs_from_forward_on_asymmetric_case():
    # Teacher bimodal, student on one mode: forward KL punishes the missed mode much harder.
    log_pt = torch.tensor([[0.49, 0.49, 0.02]], dtype=torch.float64).log()
    log_ps = torch.tensor([[0.96, 0.02, 0.02]], dtype=torch.float64).log()
    fwd, rev = forward_kl(log_pt, log_ps).item(), reverse_kl(log_pt, log_ps).item()
    assert fwd == pytest.approx(0.49 * math.log(0.49 / 0.96) + 0.49 * math.log(0.49 / 0.02))
    assert rev == pytest.approx(0.96 * math.log(0.96 / 0.49) + 0.02 * math.log(0.02 / 0.49))
    assert fwd > 2 * rev


def test_teacher_with_masked_vocabulary_stays_finite():
    student, teacher, labels = make_batch(seed=16)
    teacher[..., -3:] = -math.inf  # e.g. padded vocabulary entries the teacher never emits
    for name in ["forward_kl", "jsd"]:
        loss = kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0, divergence=name)
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        torch.testing.assert_close(loss, ref_kd(student, teacher.clamp(min=-1e30), labels, 0.5, 2.0, name))


def test_unknown_divergence_names_the_choices():
    student, teacher, labels = make_batch()
    with pytest.raises(ValueError) as info:
        kd_loss(student, teacher, labels, alpha=0.5, temperature=1.0, divergence="kl")
    for name in DIVERGENCE_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="bucket"):
        sparse_kd_loss(student, torch.zeros(2, 6, 1, dtype=torch.long), torch.zeros(2, 6, 1), labels,
                       alpha=0.5, temperature=1.0, tail="drop")


def test_input_validation():
    student, teacher, labels = make_batch()
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(student, teacher, labels, alpha=0.5, temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(student, teacher, labels, alpha=1.5, temperature=1.0)
    with pytest.raises(ValueError, match="vocabulary"):
        kd_loss(student, teacher[..., :-1], labels, alpha=0.5, temperature=1.0)


# --- sparse top-k targets ---------------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 2.5])
@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("name", DIVERGENCE_NAMES)
def test_sparse_full_vocabulary_equals_dense(name, tail, T):
    student, teacher, labels = make_batch(seed=17)
    V = student.size(-1)
    # All V ids, in a random order per token, as a server would list them.
    order = torch.argsort(torch.rand(*labels.shape, V, generator=torch.Generator().manual_seed(0)), dim=-1)
    logprobs = F.log_softmax(teacher, -1).gather(-1, order)
    dense = kd_loss(student, teacher, labels, alpha=0.3, temperature=T, divergence=name)
    sparse = sparse_kd_loss(student, order, logprobs, labels, alpha=0.3, temperature=T, divergence=name, tail=tail)
    torch.testing.assert_close(sparse, dense, rtol=1e-10, atol=1e-12)
    (g_dense,) = torch.autograd.grad(dense, student)
    (g_sparse,) = torch.autograd.grad(sparse, student)
    torch.testing.assert_close(g_sparse, g_dense, rtol=1e-9, atol=1e-12)


def test_sparse_bucket_and_renormalize_by_hand():
    # One token, V = 4, top-2 teacher ids {0, 1} with probs 0.6, 0.3 (tail 0.1).
    student = torch.tensor([[[1.0, 0.0, 0.5, -1.0]]], dtype=torch.float64)
    q = F.softmax(student[0, 0], -1)
    ids = torch.tensor([[[0, 1]]])
    logprobs = torch.tensor([[[0.6, 0.3]]], dtype=torch.float64).log()
    labels = torch.tensor([[0]])
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q_bucket = torch.stack([q[0], q[1], q[2] + q[3]])
    expected = (p * (p / q_bucket).log()).sum()
    loss = sparse_kd_loss(student, ids, logprobs, labels, alpha=0.0, temperature=1.0, tail="bucket")
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)

    p_r, q_r = p[:2] / p[:2].sum(), q[:2] / q[:2].sum()
    expected = (p_r * (p_r / q_r).log()).sum()
    loss = sparse_kd_loss(student, ids, logprobs, labels, alpha=0.0, temperature=1.0, tail="renormalize")
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)

    # T = 2: both collapsed distributions are tempered the same way, p^T ∝ p^(1/T).
    pt, qt = p.sqrt() / p.sqrt().sum(), q_bucket.sqrt() / q_bucket.sqrt().sum()
    expected = 4.0 * (pt * (pt / qt).log()).sum()
    loss = sparse_kd_loss(student, ids, logprobs, labels, alpha=0.0, temperature=2.0, tail="bucket")
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_sparse_rounded_logprobs_keep_reverse_kl_finite():
    # Served top-k logprobs that sum to slightly more than 1: the tail is floored, not log(0).
    student, _, labels = make_batch(B=1, T=3, V=6, seed=18, n_ignored=0)
    ids = torch.tensor([[[0, 1]] * 3])
    logprobs = torch.tensor([[[0.7, 0.3 + 1e-7]] * 3], dtype=torch.float64).log()
    for name in DIVERGENCE_NAMES:
        loss = sparse_kd_loss(student, ids, logprobs, labels, alpha=0.0, temperature=1.0, divergence=name)
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


# --- sequences and actions --------------------------------------------------------------------


def test_sequence_logprob_sums_kept_tokens():
    logits, _, labels = make_batch(seed=19)
    logprobs = F.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected = logprobs.masked_fill(labels == -100, 0.0).sum(1)
    torch.testing.assert_close(sequence_logprob(logits, labels, chunk_size=4), expected, rtol=1e-12, atol=0)


def test_action_distribution_loss_is_kl_plus_entropy():
    # Two states; the second has only two real actions (third is padding with -inf).
    p = torch.tensor([[0.5, 0.25, 0.25], [0.75, 0.25, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.4, 0.4, 0.1], [0.5, 0.3, 0.2]], dtype=torch.float64)
    logq = q.log()
    logq[1, 2] = -math.inf
    mask = torch.tensor([[True, True, True], [True, True, False]])
    logq.requires_grad_()
    loss = action_distribution_loss(logq, p, mask)

    def kl_plus_entropy(p_row, q_row):
        kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p_row, q_row) if pi > 0)
        entropy = -sum(pi * math.log(pi) for pi in p_row if pi > 0)
        return kl + entropy

    expected = 0.5 * (kl_plus_entropy([0.5, 0.25, 0.25], [0.4, 0.4, 0.1]) + kl_plus_entropy([0.75, 0.25], [0.5, 0.3]))
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    # d/d log q(a) of the mean over 2 states is -p(a) / 2; padding gets no gradient.
    torch.testing.assert_close(logq.grad, -p / 2, rtol=1e-12, atol=0)


def test_action_loss_with_sequence_logprob_end_to_end():
    # Score 3 candidate actions for one state by sequence log-likelihood, then train towards p_T.
    logits, _, labels = make_batch(B=3, T=4, V=7, seed=20, n_ignored=1)
    seq = sequence_logprob(logits, labels).unsqueeze(0)  # (1 state, 3 actions)
    p = torch.tensor([[0.6, 0.4, 0.0]], dtype=torch.float64)
    loss = action_distribution_loss(seq, p)
    loss.backward()
    assert loss.item() == pytest.approx(-(p * seq.detach()).sum().item())
    assert torch.all(logits.grad[2] == 0)  # p_T(a3) = 0: that action's tokens get no gradient
    assert logits.grad[0].abs().sum() > 0
