"""Weighted cross-entropy through the LM head without the (N, V) logits.

`fused_weighted_cross_entropy` returns Σ_t w_t · CE_t for hidden states (N, H) and an LM-head weight (V, H).
Qwen3-VL's vocabulary is 151,936 entries: 4,096 supervised tokens would need 2.5 GB of fp32 logits, and as much
again for their gradient. The fused version computes the loss *and already in the forward pass* its gradients,
one chunk of logits at a time, and throws each chunk away; backward only scales the stored gradients by the
upstream gradient (the approach of Liger-Kernel's fused linear cross-entropy). Two ways to chunk:

- **Frozen LM head** (LoRA; the trainer's case): chunks over the *vocabulary*, all tokens at once, with an online
  softmax (the running max / sum rescaling of FlashAttention): for each vocabulary chunk c, logits_c = X W_cᵀ,
  then acc ← acc·e^(m_old − m_new) + e^(logits_c − m_new) W_c. At the end ∂CE/∂X = acc / Σe − W[target]. Two
  matrix products per chunk, as many as the full-logits path, and every product has all N rows — on a CPU this
  is as fast as (or faster than) the naive path, where token chunks of ~100 rows against the 151,936-row head
  ran 1.6× slower.
- **Trainable LM head or bias**: the weight gradient needs the normalised softmax of every logit, so this path
  chunks over *tokens*, computing each chunk's full-vocabulary logits, loss and gradients.

The caller normalises: divide the returned sum by the number of supervised tokens (STS `normalize="mean"` or
`"none"`) or by Σw over the optimizer step (`"global"`); `CEStats` carries both counts and the unweighted CE
sum, for logging plain cross-entropy next to the weighted loss.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from hikari.config import LossConfig, default
from hikari.models.batching import IGNORE_INDEX

BACKENDS = ("auto", "torch", "liger", "cce")
LIGER_MIN_VERSION = (0, 8, 2)  # earlier releases return wrong gradients for reduction="none" (Liger issue #968)

# Auto chunk sizes keep one chunk's fp32 logits within this many bytes: ~110 tokens × the full 151,936-entry
# vocabulary (token chunks), or 4,096 vocabulary entries × 4,096 tokens (vocabulary chunks). At these sizes the
# chunk matmuls are still large and a chunk's logits stay ~2–3% of the full (N, V) tensor.
CHUNK_LOGITS_BYTES = 64 * 2**20
MIN_VOCAB_CHUNK = 256  # narrower vocabulary chunks make the products inefficient; costs N × 256 fp32 at most


@dataclass(frozen=True)
class CEStats:
    """Detached statistics of one weighted cross-entropy call (0-dim tensors, no host sync)."""

    n_tokens: torch.Tensor  # supervised tokens (targets != ignore_index)
    weight_sum: torch.Tensor  # Σ w over supervised tokens (the "global" normaliser's share of this call)
    ce_sum: torch.Tensor  # Σ CE over supervised tokens, unweighted


def auto_token_chunk(vocab_size: int) -> int:
    """Tokens per chunk (trainable LM head) such that one chunk's fp32 logits take at most `CHUNK_LOGITS_BYTES`."""
    return max(1, CHUNK_LOGITS_BYTES // (4 * vocab_size))


def auto_vocab_chunk(n_tokens: int, vocab_size: int) -> int:
    """Vocabulary entries per chunk (frozen LM head) for `n_tokens` rows: one chunk's fp32 logits within
    `CHUNK_LOGITS_BYTES`, at least `MIN_VOCAB_CHUNK` entries, at most the vocabulary."""
    return max(1, min(vocab_size, max(MIN_VOCAB_CHUNK, CHUNK_LOGITS_BYTES // (4 * max(1, n_tokens)))))


def _check_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    token_weights: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be (N, H) and weight (V, H); got {tuple(hidden.shape)}, {tuple(weight.shape)}")
    if targets.shape != (hidden.shape[0],):
        raise ValueError(f"targets must be (N,) = ({hidden.shape[0]},), got {tuple(targets.shape)}")
    if token_weights is not None and token_weights.shape != targets.shape:
        raise ValueError(f"token_weights must have the targets' shape {tuple(targets.shape)}, got "
                         f"{tuple(token_weights.shape)}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden ({hidden.dtype}) and weight ({weight.dtype}) must share a dtype")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be (V,) = ({weight.shape[0]},), got {tuple(bias.shape)}")


def _prepare(
    hidden: torch.Tensor, targets: torch.Tensor, token_weights: torch.Tensor | None, vocab: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 weights (N,) with ignored positions zeroed, and the supervised count; checks target ids."""
    valid = targets != ignore_index
    bad = valid & ((targets < 0) | (targets >= vocab))
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"target {int(targets[first])} at position {first} is outside the vocabulary [0, {vocab})")
    w = torch.ones_like(targets, dtype=torch.float32) if token_weights is None else token_weights.float()
    w = torch.where(valid, w, torch.zeros((), dtype=torch.float32, device=w.device))
    return w, valid, valid.sum()


def _token_chunked(
    x: torch.Tensor,  # (K, H) supervised rows
    weight: torch.Tensor,  # (V, H)
    bias: torch.Tensor | None,  # (V,)
    t: torch.Tensor,  # (K,) target ids
    wk: torch.Tensor,  # (K,) fp32 token weights
    chunk_size: int,
    need_h: bool,
    need_w: bool,
    need_b: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Chunks of `chunk_size` tokens against the whole vocabulary: (Σw·CE, ΣCE, ∂/∂x, ∂/∂weight (fp32), ∂/∂bias)."""
    k, h = x.shape
    v = weight.shape[0]
    dtype, device = x.dtype, x.device
    loss = torch.zeros((), dtype=torch.float32, device=device)
    ce_total = torch.zeros((), dtype=torch.float32, device=device)
    grad_x = torch.empty((k, h), dtype=dtype, device=device) if need_h else None
    # Weight/bias gradients accumulate over chunks in fp32 (a bf16 running sum would lose the small chunks).
    grad_w = torch.zeros((v, h), dtype=torch.float32, device=weight.device) if need_w else None
    grad_b = torch.zeros((v,), dtype=torch.float32, device=weight.device) if need_b else None
    # Two chunk buffers reused by every chunk: logits in the input dtype (reused for the gradient cast back to it)
    # and the fp32 log-softmax (turned into the logits gradient in place). Reuse keeps the allocator out of the
    # loop (on CPU every fresh buffer of this size is a new mmap that page-faults on first touch).
    c_max = max(1, min(chunk_size, k))
    logits_buf = torch.empty((c_max, v), dtype=dtype, device=device)
    logp_buf = torch.empty((c_max, v), dtype=torch.float32, device=device)
    rows = torch.arange(c_max, device=device)
    for start in range(0, k, chunk_size):
        end = min(start + chunk_size, k)
        c = end - start
        xc, tc, wc = x[start:end], t[start:end], wk[start:end]
        # Logits in the input dtype (tensor cores for bf16), log-softmax in fp32.
        logits = logits_buf[:c]
        if bias is not None:
            torch.addmm(bias, xc, weight.t(), out=logits)
        else:
            torch.mm(xc, weight.t(), out=logits)
        logp = torch.log_softmax(logits, dim=1, dtype=torch.float32, out=logp_buf[:c])  # (C, V)
        ce = -logp.gather(1, tc.unsqueeze(1)).squeeze(1)
        loss += (ce * wc).sum()
        ce_total += ce.sum()
        if not (need_h or need_w or need_b):
            continue
        # d(Σ w·CE)/d logits = w · (softmax − onehot), built in place in the log-softmax buffer.
        grad_logits = logp.exp_()
        grad_logits[rows[:c], tc] -= 1.0
        grad_logits.mul_(wc.unsqueeze(1))
        if grad_b is not None:
            grad_b += grad_logits.sum(0)
        # The input dtype, as autograd would feed the matmul (fp32: the same buffer, no copy).
        g = grad_logits if dtype == torch.float32 else logits.copy_(grad_logits)
        if grad_x is not None:
            torch.mm(g, weight, out=grad_x[start:end])
        if grad_w is not None:
            if dtype == torch.float32:
                grad_w.addmm_(g.t(), xc)
            else:
                grad_w += g.t() @ xc
    return loss, ce_total, grad_x, grad_w, grad_b


def _vocab_chunked(
    x: torch.Tensor,  # (K, H) supervised rows
    weight: torch.Tensor,  # (V, H), frozen
    bias: torch.Tensor | None,  # (V,), frozen
    t: torch.Tensor,  # (K,) target ids
    wk: torch.Tensor,  # (K,) fp32 token weights
    chunk_size: int,
    need_h: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """All tokens against chunks of `chunk_size` vocabulary entries, online softmax: (Σw·CE, ΣCE, ∂/∂x).

    Per chunk: logits_c = x W_cᵀ (+ b_c), m' = max(m, rowmax logits_c), p = e^(logits_c − m'),
    s ← s·e^(m − m') + Σp, acc ← acc·e^(m − m') + p W_c. After the last chunk log Σe^logits = m + log s and
    ∂CE/∂x = acc / s − W[target] — the softmax-weighted sum of head rows minus the target's row.
    """
    k, h = x.shape
    v = weight.shape[0]
    dtype, device = x.dtype, x.device
    c_max = max(1, min(chunk_size, v))
    logits_buf = torch.empty((k, c_max), dtype=dtype, device=device)
    # fp32 exponentials; for fp32 inputs the logits buffer itself (exponentiated in place).
    p_buf = logits_buf if dtype == torch.float32 else torch.empty((k, c_max), dtype=torch.float32, device=device)
    prod_buf = None if dtype == torch.float32 or not need_h else torch.empty((k, h), dtype=dtype, device=device)
    running_max = torch.full((k,), float("-inf"), dtype=torch.float32, device=device)
    running_sum = torch.zeros((k,), dtype=torch.float32, device=device)
    acc = torch.zeros((k, h), dtype=torch.float32, device=device) if need_h else None
    target_logit = torch.zeros((k,), dtype=torch.float32, device=device)
    for start in range(0, v, chunk_size):
        end = min(start + chunk_size, v)
        c = end - start
        w_c = weight[start:end]
        logits = logits_buf[:, :c]
        if bias is not None:
            torch.addmm(bias[start:end], x, w_c.t(), out=logits)
        else:
            torch.mm(x, w_c.t(), out=logits)
        # The target's logit, as the full-logits path rounds it (the input dtype), taken before exp overwrites it.
        local = t - start
        inside = (local >= 0) & (local < c)
        picked = logits.gather(1, local.clamp(0, c - 1).unsqueeze(1)).squeeze(1).float()
        target_logit = torch.where(inside, picked, target_logit)
        new_max = torch.maximum(running_max, logits.amax(1).float())
        p = torch.sub(logits, new_max.unsqueeze(1), out=p_buf[:, :c]).exp_()
        rescale = (running_max - new_max).exp_()  # 0 at the first chunk (e^-inf)
        running_sum.mul_(rescale).add_(p.sum(1))
        running_max = new_max
        if acc is None:
            continue
        acc.mul_(rescale.unsqueeze(1))
        if dtype == torch.float32:
            acc.addmm_(p, w_c)
        else:  # the input dtype, as autograd would feed the matmul; summed over chunks in fp32
            acc.add_(torch.mm(logits.copy_(p), w_c, out=prod_buf))
    ce = running_max + running_sum.log() - target_logit
    grad_x = None
    if acc is not None:
        acc.div_(running_sum.unsqueeze(1)).sub_(weight.index_select(0, t).float()).mul_(wk.unsqueeze(1))
        grad_x = acc if dtype == torch.float32 else acc.to(dtype)
    return (ce * wk).sum(), ce.sum(), grad_x


class _FusedLinearWeightedCE(torch.autograd.Function):
    """Σ w·CE(hidden @ weightᵀ + bias, targets), gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,  # (N, H)
        weight: torch.Tensor,  # (V, H)
        bias: torch.Tensor | None,  # (V,)
        targets: torch.Tensor,  # (N,) ids, any valid id at ignored positions
        w: torch.Tensor,  # (N,) fp32, 0 at ignored positions
        valid: torch.Tensor,  # (N,) bool, the supervised positions
        chunk_size: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = hidden.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]

        # Ignored rows add nothing to the loss or any gradient: skip them (zero-weighted supervised rows are kept,
        # so that `ce_total` covers every supervised token).
        keep = valid.nonzero().squeeze(1)
        compact = keep.numel() < n
        x = hidden.index_select(0, keep) if compact else hidden
        t = targets.index_select(0, keep) if compact else targets
        wk = w.index_select(0, keep) if compact else w

        grad_w = grad_b = None
        if x.shape[0] == 0:
            loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
            ce_total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_x = torch.zeros_like(x) if need_h else None
            grad_w = torch.zeros_like(weight) if need_w else None
            grad_b = torch.zeros_like(bias) if need_b and bias is not None else None
        elif need_w or need_b:
            size = chunk_size if chunk_size is not None else auto_token_chunk(weight.shape[0])
            loss, ce_total, grad_x, grad_w, grad_b = _token_chunked(x, weight, bias, t, wk, size, need_h, need_w,
                                                                    need_b)
        else:
            size = chunk_size if chunk_size is not None else auto_vocab_chunk(x.shape[0], weight.shape[0])
            loss, ce_total, grad_x = _vocab_chunked(x, weight, bias, t, wk, size, need_h)

        grad_hidden = None
        if grad_x is not None:
            if compact:
                grad_hidden = torch.zeros_like(hidden)
                grad_hidden.index_copy_(0, keep, grad_x)
            else:
                grad_hidden = grad_x
        ctx.grads = (
            grad_hidden,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None and bias is not None else None,
        )
        ctx.mark_non_differentiable(ce_total)
        return loss, ce_total

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_ce: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.grads is None:
            raise RuntimeError(
                "fused_weighted_cross_entropy: backward can run only once per forward (its gradients are computed "
                "in forward and handed over); recompute the loss instead of using retain_graph"
            )
        grads = ctx.grads
        ctx.grads = None  # hand the stored gradients over; nothing else holds them
        # Scale in place by the 0-dim fp32 upstream gradient: no second (V, H) buffer, each tensor keeps its dtype.
        scale = grad_loss.detach()
        grad_hidden, grad_weight, grad_bias = (g.mul_(scale) if g is not None else None for g in grads)
        return (
            grad_hidden,
            grad_weight,
            grad_bias,
            None,
            None,
            None,
            None,
        )


def _liger_version() -> tuple[int, ...] | None:
    """Installed Liger-Kernel version, or None when it is not installed."""
    try:
        version = importlib.metadata.version("liger-kernel")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def _liger_loss(hidden, weight, targets, bias, ignore_index):  # type: ignore[no-untyped-def]
    # Reached only through `choose_backend`, which checked the installed version.
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss  # optional CUDA extra

    per_token = LigerFusedLinearCrossEntropyLoss(reduction="none", ignore_index=ignore_index)
    return per_token(weight, hidden, targets, bias)


def _cce_loss(hidden, weight, targets, bias, ignore_index):  # type: ignore[no-untyped-def]
    # Reached only through `choose_backend`, which checked that it is installed and that there is no bias.
    from cut_cross_entropy import linear_cross_entropy  # optional CUDA extra

    return linear_cross_entropy(hidden, weight, targets, ignore_index=ignore_index, reduction="none")


@dataclass(frozen=True)
class BackendChoice:
    """Which cross-entropy implementation runs (`name`: torch | liger | cce) for the `requested` setting, and why."""

    requested: str
    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"requested": self.requested, "name": self.name, "reason": self.reason}


def _liger_problem() -> str | None:
    version = _liger_version()
    if version is None:
        return "Liger-Kernel is not installed (pip install 'liger-kernel>=0.8.2')"
    if version < LIGER_MIN_VERSION:
        return (f"Liger-Kernel {'.'.join(map(str, version))} is installed; >= 0.8.2 is needed (earlier releases "
                "return wrong gradients for reduction='none')")
    return None


def _cce_problem(has_bias: bool) -> str | None:
    if importlib.util.find_spec("cut_cross_entropy") is None:
        return "Cut Cross-Entropy is not installed (pip install cut-cross-entropy)"
    if has_bias:
        return "Cut Cross-Entropy has no LM-head bias support"
    return None


def choose_backend(backend: str, device: torch.device, *, has_bias: bool = False) -> BackendChoice:
    """The implementation `backend` stands for on `device`, with the reason; raises ValueError when it cannot run.

    'auto' on CUDA = Liger (>= 0.8.2), else Cut Cross-Entropy (no bias), else torch; on any other device torch.
    An explicit 'liger' or 'cce' must be able to run (CUDA, installed, a supported version, no bias for cce):
    nothing falls back silently to another implementation than the one asked for."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown cross-entropy backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "torch":
        return BackendChoice(backend, "torch", "asked for")
    if backend in ("liger", "cce"):
        if device.type != "cuda":
            raise ValueError(f"backend {backend!r} runs on CUDA only; this run is on {device}")
        problem = _liger_problem() if backend == "liger" else _cce_problem(has_bias)
        if problem:
            raise ValueError(f"backend {backend!r} cannot run: {problem}")
        return BackendChoice(backend, backend, "asked for")
    if device.type != "cuda":
        return BackendChoice(backend, "torch", f"auto: Liger and Cut Cross-Entropy need CUDA, this run is on {device}")
    liger = _liger_problem()
    if liger is None:
        return BackendChoice(backend, "liger", "auto: CUDA and Liger-Kernel >= 0.8.2 installed")
    cce = _cce_problem(has_bias)
    if cce is None:
        return BackendChoice(backend, "cce", f"auto: CUDA, Cut Cross-Entropy installed ({liger})")
    return BackendChoice(backend, "torch", f"auto: {liger}; {cce}")


def resolve_backend(backend: str, device: torch.device, *, has_bias: bool = False) -> str:
    """`choose_backend(...).name`."""
    return choose_backend(backend, device, has_bias=has_bias).name


def fused_weighted_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    token_weights: torch.Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
    bias: torch.Tensor | None = None,
    backend: Literal["auto", "torch", "liger", "cce"] = default(LossConfig, "ce_backend"),
) -> tuple[torch.Tensor, CEStats]:
    """Σ_t w_t · CE(hidden_t @ weightᵀ + bias, targets_t) without materialising the (N, V) logits.

    Args:
        hidden: (N, H) final hidden states of the positions that predict `targets` (bf16/fp16/fp32).
        weight: (V, H) LM-head weight, same dtype as `hidden`; frozen or trainable.
        targets: (N,) next-token ids; `ignore_index` marks positions without a target.
        token_weights: (N,) per-token loss weights (e.g. STS), treated as constants; None = all 1.
        ignore_index: target id that contributes nothing.
        chunk_size: the chunk's length along the chunked dimension: vocabulary entries when neither the LM head
            nor its bias needs a gradient (online softmax over vocabulary chunks, all tokens at once), tokens when
            one does (each token chunk against the whole vocabulary). None = `auto_vocab_chunk(N, V)` or
            `auto_token_chunk(V)`: one chunk's fp32 logits ≤ 64 MiB.
        bias: optional (V,) LM-head bias.
        backend: "torch" (this module, any device), "liger" (Liger-Kernel ≥ 0.8.2), "cce" (Cut Cross-Entropy),
            or "auto" (`choose_backend`: on CUDA liger, else cce when there is no bias, else torch; torch
            elsewhere). Liger and CCE return per-token losses (reduction="none") that are weighted here; asked
            for where they cannot run (no CUDA, not installed) they raise ValueError. `chunk_size` applies to
            "torch" only.

    Returns:
        (loss_sum, stats): the 0-dim fp32 sum of w·CE (differentiable wrt hidden, weight, bias) and `CEStats`.
        Logits are computed in the input dtype and upcast to fp32 for the log-softmax; gradients come back in
        the inputs' dtypes.
    """
    _check_inputs(hidden, weight, targets, token_weights, bias)
    w, valid, n_tokens = _prepare(hidden, targets, token_weights, weight.shape[0], ignore_index)
    name = resolve_backend(backend, hidden.device, has_bias=bias is not None)
    if name == "torch":
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        safe_targets = torch.where(targets == ignore_index, torch.zeros_like(targets), targets)
        if not torch.is_grad_enabled():  # evaluation: detached inputs, so forward computes no gradients
            hidden, weight = hidden.detach(), weight.detach()
            bias = bias.detach() if bias is not None else None
        loss, ce_sum = _FusedLinearWeightedCE.apply(hidden, weight, bias, safe_targets, w, valid, chunk_size)
    else:
        per_token = (_liger_loss if name == "liger" else _cce_loss)(hidden, weight, targets, bias, ignore_index)
        per_token = per_token.float()
        loss = (per_token * w).sum()
        ce_sum = per_token.detach().masked_fill(targets == ignore_index, 0.0).sum()
    return loss, CEStats(n_tokens=n_tokens.detach(), weight_sum=w.sum().detach(), ce_sum=ce_sum.detach())


def naive_weighted_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    token_weights: torch.Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference Σ_t w_t · CE_t through full (N, V) logits (input dtype, upcast to fp32). For tests/benchmarks."""
    logits = F.linear(hidden, weight, bias).float()
    ce = F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="none")
    if token_weights is None:
        return ce.sum()
    return (ce * token_weights.float()).sum()
