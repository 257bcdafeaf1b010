"""The fused weighted cross-entropy against full-logits references (values and gradients)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from hikari.training.cross_entropy import (
    auto_token_chunk,
    auto_vocab_chunk,
    fused_weighted_cross_entropy,
    naive_weighted_cross_entropy,
    resolve_backend,
)

IGNORE = -100
N, H, V = 37, 16, 50  # N odd and prime: no chunk size in the tests divides it


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _problem(dtype: torch.dtype, *, seed: int = 0, bias: bool = False, train_weight: bool = True) -> dict[str, Any]:
    """Random inputs with ignored positions, zero weights and non-uniform weights."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[::5] = IGNORE
    weights = torch.rand(N, generator=g) * 2
    weights[1::6] = 0.0
    return {
        "hidden": torch.randn(N, H, generator=g).to(dtype).requires_grad_(),
        "weight": torch.randn(V, H, generator=g).to(dtype).requires_grad_(train_weight),
        "bias": torch.randn(V, generator=g).to(dtype).requires_grad_() if bias else None,
        "targets": targets,
        "token_weights": weights,
        "upstream": torch.rand((), generator=g) * 3 + 0.5,  # a non-unit upstream gradient
    }


def _run(fn: Any, p: dict[str, Any], **kwargs: Any) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Loss value and gradients wrt (hidden, weight, bias) of `upstream * fn(...)`."""
    leaves = [p["hidden"], p["weight"], p["bias"]]
    for t in leaves:
        if t is not None:
            t.grad = None
    out = fn(p["hidden"], p["weight"], p["targets"], p["token_weights"], bias=p["bias"], **kwargs)
    loss = out[0] if isinstance(out, tuple) else out
    (loss * p["upstream"]).backward()
    return loss.detach(), [t.grad.clone() if t is not None and t.grad is not None else None for t in leaves]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


# A trainable head (or bias) takes the token-chunked path, a frozen one the vocabulary-chunked online softmax; the
# chunk sizes divide neither N = 37 nor V = 50, and V + 5 / N + 5 make one chunk larger than the whole.
@pytest.mark.parametrize("chunk_size", [1, 7, N, N + 5, V + 5, None])
@pytest.mark.parametrize(("bias", "train_weight"), [(False, True), (True, True), (False, False)])
def test_fused_matches_naive_in_fp32(chunk_size: int | None, bias: bool, train_weight: bool) -> None:
    p = _problem(torch.float32, bias=bias, train_weight=train_weight)
    loss_f, grads_f = _run(fused_weighted_cross_entropy, p, chunk_size=chunk_size, backend="torch")
    loss_n, grads_n = _run(naive_weighted_cross_entropy, p)
    torch.testing.assert_close(loss_f, loss_n, rtol=1e-5, atol=1e-5)
    for gf, gn in zip(grads_f, grads_n):
        if gn is None:
            assert gf is None
            continue
        assert gf is not None and gf.dtype == torch.float32
        assert _rel_err(gf, gn) < 1e-5  # max abs difference relative to the largest gradient entry


@pytest.mark.parametrize("chunk_size", [1, 7, V + 5])
@pytest.mark.parametrize("train_weight", [True, False])
def test_fused_in_bf16_is_as_close_to_fp32_as_the_naive_bf16(chunk_size: int, train_weight: bool) -> None:
    p = _problem(torch.bfloat16, bias=True, train_weight=train_weight)
    if not train_weight:  # a frozen head with a frozen bias: the vocabulary-chunked path
        p["bias"].requires_grad_(False)
    loss_f, grads_f = _run(fused_weighted_cross_entropy, p, chunk_size=chunk_size, backend="torch")
    loss_n, grads_n = _run(naive_weighted_cross_entropy, p)
    ref = {k: (v.detach().float().requires_grad_(v.requires_grad) if torch.is_tensor(v) and v.is_floating_point()
               and k != "token_weights" and k != "upstream" else v) for k, v in p.items()}
    loss_r, grads_r = _run(naive_weighted_cross_entropy, ref)
    assert loss_f.dtype == torch.float32
    assert _rel_err(loss_f, loss_r) < 1e-3
    for gf, gn, gr in zip(grads_f, grads_n, grads_r):
        if gr is None:
            assert gf is None and gn is None
            continue
        assert gf is not None and gn is not None
        assert gf.dtype == torch.bfloat16
        assert _rel_err(gf, gr) <= max(2 * _rel_err(gn, gr), 2e-2)


def test_frozen_lm_head_gets_no_gradient_and_hidden_gradient_is_exact() -> None:
    p = _problem(torch.float32, train_weight=False)
    _, (gh, gw, _) = _run(fused_weighted_cross_entropy, p, chunk_size=7, backend="torch")
    _, (gh_n, _, _) = _run(naive_weighted_cross_entropy, p)
    assert gw is None and p["weight"].grad is None
    assert gh is not None and _rel_err(gh, gh_n) < 1e-5


def test_online_softmax_is_stable_when_the_largest_logit_moves_between_chunks() -> None:
    """Logits in the hundreds, with each row's maximum in a different vocabulary chunk: the running max must be
    rescaled (no overflow, no lost mass), matching the full-logits path."""
    p = _problem(torch.float32, train_weight=False)
    with torch.no_grad():
        p["hidden"].mul_(40.0)
        logits = p["hidden"] @ p["weight"].t()
    assert float(logits.abs().max()) > 100 and len(set((logits.argmax(1) // 3).tolist())) > 5
    loss_f, (gh, _, _) = _run(fused_weighted_cross_entropy, p, chunk_size=3, backend="torch")
    loss_n, (gh_n, _, _) = _run(naive_weighted_cross_entropy, p)
    assert torch.isfinite(loss_f)
    torch.testing.assert_close(loss_f, loss_n, rtol=1e-5, atol=1e-3)
    assert gh is not None and gh_n is not None and _rel_err(gh, gh_n) < 1e-5


def test_ignored_and_zero_weight_tokens_get_zero_gradient_and_stats_count_right() -> None:
    p = _problem(torch.float32)
    loss, stats = fused_weighted_cross_entropy(p["hidden"], p["weight"], p["targets"], p["token_weights"],
                                               chunk_size=7, backend="torch")
    loss.backward()
    dead = (p["targets"] == IGNORE) | (p["token_weights"] == 0)
    assert bool((p["hidden"].grad[dead] == 0).all()) and bool((p["hidden"].grad[~dead] != 0).any())
    valid = p["targets"] != IGNORE
    with torch.no_grad():
        ce = F.cross_entropy(p["hidden"] @ p["weight"].t(), p["targets"], ignore_index=IGNORE, reduction="none")
    assert int(stats.n_tokens) == int(valid.sum())
    assert float(stats.weight_sum) == pytest.approx(float(p["token_weights"][valid].sum()), rel=1e-6)
    assert float(stats.ce_sum) == pytest.approx(float(ce.sum()), rel=1e-5)
    assert not stats.ce_sum.requires_grad


def test_no_weights_equals_summed_cross_entropy_and_all_ignored_is_zero() -> None:
    p = _problem(torch.float32)
    loss, _ = fused_weighted_cross_entropy(p["hidden"], p["weight"], p["targets"], backend="torch")
    expected = F.cross_entropy(p["hidden"] @ p["weight"].t(), p["targets"], ignore_index=IGNORE, reduction="sum")
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)

    ignored = torch.full((N,), IGNORE)
    loss, stats = fused_weighted_cross_entropy(p["hidden"], p["weight"], ignored, backend="torch")
    loss.backward()
    assert loss.item() == 0.0 and int(stats.n_tokens) == 0
    assert bool((p["hidden"].grad == 0).all()) and bool((p["weight"].grad == 0).all())


def test_no_grad_mode_computes_the_value_only() -> None:
    p = _problem(torch.float32)
    with torch.no_grad():
        loss, _ = fused_weighted_cross_entropy(p["hidden"], p["weight"], p["targets"], p["token_weights"])
    assert not loss.requires_grad
    expected = naive_weighted_cross_entropy(p["hidden"], p["weight"], p["targets"], p["token_weights"])
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=1e-5)


def test_second_backward_through_the_same_graph_fails_loudly() -> None:
    p = _problem(torch.float32)
    loss, _ = fused_weighted_cross_entropy(p["hidden"], p["weight"], p["targets"], backend="torch")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        loss.backward()


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an aten op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("train_weight", [True, False])
def test_fused_never_materialises_the_full_logits(train_weight: bool) -> None:
    n, h, v, chunk = 64, 4, 50, 8  # n*v = 3200 elements; every other tensor is far smaller
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(n, h, generator=g, requires_grad=True)
    weight = torch.randn(v, h, generator=g, requires_grad=train_weight)
    targets = torch.randint(0, v, (n,), generator=g)
    with _LargestTensor() as fused:
        loss, _ = fused_weighted_cross_entropy(hidden, weight, targets, chunk_size=chunk, backend="torch")
        loss.backward()
    with _LargestTensor() as naive:
        naive_weighted_cross_entropy(hidden, weight, targets).backward()
    assert naive.largest == n * v  # the check can see the logits when they exist
    # Token chunks: chunk × V logits; vocabulary chunks: N × chunk logits (the (V, H) weight is an input).
    assert fused.largest <= (chunk * v if train_weight else max(n * chunk, v * h))


def test_input_validation_and_backend_resolution() -> None:
    p = _problem(torch.float32)
    bad = p["targets"].clone()
    bad[3] = V
    with pytest.raises(ValueError, match="position 3"):
        fused_weighted_cross_entropy(p["hidden"], p["weight"], bad)
    with pytest.raises(ValueError, match="share a dtype"):
        fused_weighted_cross_entropy(p["hidden"], p["weight"].detach().double(), p["targets"])
    with pytest.raises(ValueError, match="token_weights"):
        fused_weighted_cross_entropy(p["hidden"], p["weight"], p["targets"], torch.ones(N + 1))
    with pytest.raises(ValueError, match="valid: auto, torch, liger, cce"):
        fused_weighted_cross_entropy(p["hidden"], p["weight"], p["targets"], backend="triton")  # type: ignore
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="CUDA only"):
        resolve_backend("liger", torch.device("cpu"))
    assert auto_token_chunk(151_936) == 110 and auto_token_chunk(64) == 2**18
    assert auto_vocab_chunk(4096, 151_936) == 4096 and auto_vocab_chunk(10**6, 151_936) == 256
    assert auto_vocab_chunk(10, 151_936) == 151_936


# --- optional CUDA backends ----------------------------------------------------------------------------------

_NO_CUDA = "needs a CUDA device (Liger-Kernel and Cut Cross-Entropy are Triton GPU kernels)"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=_NO_CUDA)
@pytest.mark.parametrize(
    ("backend", "module", "package"),
    [("liger", "liger_kernel", "liger-kernel>=0.8.2"), ("cce", "cut_cross_entropy", "cut-cross-entropy")],
)
def test_cuda_backends_match_the_torch_backend(backend: str, module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install '{package}')")
    torch.manual_seed(0)
    n, h, v = 257, 64, 1000
    hidden = torch.randn(n, h, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(v, h, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, v, (n,), device="cuda")
    targets[::7] = IGNORE
    w = torch.rand(n, device="cuda")
    results = []
    for name in ("torch", backend):
        hidden.grad = weight.grad = None
        loss, _ = fused_weighted_cross_entropy(hidden, weight, targets, w, backend=name)  # type: ignore[arg-type]
        (loss * 0.7).backward()
        results.append((loss.detach(), hidden.grad.clone(), weight.grad.clone()))
    (lt, ht, wt), (lb, hb, wb) = results
    assert _rel_err(lb, lt) < 1e-2
    assert _rel_err(hb, ht) < 3e-2 and _rel_err(wb, wt) < 3e-2
