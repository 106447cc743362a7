"""Which activations the training backward pass keeps (the rematerialisation policy), and the auto rule.

* ``none``: keep what the backward pass needs, recompute nothing. The weights are frozen, so a matmul's
  backward needs none of its inputs: what is kept is the inputs of the nonlinearities and of the WKV.
* ``dots``: jax's ``dots_with_no_batch_dims_saveable`` over the whole forward: keep every weight-matmul output,
  recompute the rest. Measured, it keeps more than ``none`` for any model of two or more layers and is no faster
  (benchmarks/RESULTS.md), so ``auto`` goes from ``none`` straight to ``full``; it is there to compare.
* ``full``: keep each layer's input only and recompute the layer in the backward pass (least memory).

The WKV recurrence and the head's cross-entropy are chunked under every policy, so the policies differ in the
per-token activations of the layers. Stdlib only: the config module and `-h` import this.
"""

from __future__ import annotations

POLICIES = ("none", "dots", "full")
CHOICES = ("auto",) + POLICIES

# Float32 values kept per token: n_layer * (a * n_embd + b * dim_ffn) + c * n_embd, (a, b, c) fitted to the
# compiled train step's `memory_analysis()` on XLA:CPU at three shapes (C 512-768, F 768-3072, L 4-12);
# tests/train/test_remat.py checks a fourth within 30%. 'full' keeps each layer's input and one layer's
# activations at a time, so it is the fallback, not estimated.
_PER_TOKEN = {"none": (25.4, 1.25, 35.4), "dots": (35.0, 2.25, 18.8)}
# Share of the available memory the kept activations may take: the rest is for the weights, the
# recomputation of one layer or chunk at a time, XLA's scratch buffers and whatever else runs on the machine.
BUDGET_SHARE = 0.25


def activation_bytes(policy: str, *, ctx_len: int, batch: int, n_layer: int, n_embd: int, dim_ffn: int) -> int:
    """Estimated bytes of activations the backward pass keeps under 'none' or 'dots' (weights, optimizer and
    fixed scratch buffers not included)."""
    a, b, c = _PER_TOKEN[policy]
    return int(4 * ctx_len * batch * (n_layer * (a * n_embd + b * dim_ffn) + c * n_embd))


def choose_remat(*, ctx_len: int, batch: int, n_layer: int, n_embd: int, dim_ffn: int, available_bytes: int,
                 share: float = BUDGET_SHARE) -> str:
    """The fastest policy whose kept activations fit in `share` of the available memory ('full' if none does)."""
    for policy in _PER_TOKEN:  # fastest first
        need = activation_bytes(policy, ctx_len=ctx_len, batch=batch, n_layer=n_layer, n_embd=n_embd,
                                dim_ffn=dim_ffn)
        if need <= share * available_bytes:
            return policy
    return "full"


def available_memory() -> int:
    """Bytes the system can give this process now: MemAvailable of /proc/meminfo (psutil where there is no
    /proc), capped by a cgroup v2 memory limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        import psutil
        avail = int(psutil.virtual_memory().available)
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            avail = min(avail, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return avail


def resolve_remat(remat: str, *, ctx_len: int, batch: int, config, available_bytes: int | None = None) -> str:
    """'auto' -> a policy for this model and batch shape; a named policy is returned as is."""
    if remat != "auto":
        if remat not in POLICIES:
            raise ValueError(f"unknown remat policy {remat!r}; choose one of {', '.join(CHOICES)}")
        return remat
    if available_bytes is None:
        available_bytes = available_memory()
    return choose_remat(ctx_len=ctx_len, batch=batch, n_layer=config.n_layer, n_embd=config.n_embd,
                        dim_ffn=config.dim_ffn, available_bytes=available_bytes)

