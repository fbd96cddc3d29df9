"""What every benchmark shares: side-by-side timing, the device sync, the benchmark MLP and batch.

:func:`interleaved_medians` calls the compared variants in turn (ABAB…) so that drifts in machine
load hit both alike. Train-step benchmarks time :func:`mlp_step` closures: a tanh MLP with a
seeded initialisation, trained with a given learning rule on one fixed random batch
(:func:`benchmark_batch`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from optdfa.models import build_model
from optdfa.rules import LearningRule, cross_entropy
from optdfa.seeding import torch_generator


def interleaved_medians(
    fns: dict[str, Callable[[], None]],
    repeats: int,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
    settle: float = 0.0,
) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn ``repeats`` times.

    ``settle`` seconds of sleep before each timed call let the thread pools of the previous
    variant go idle: a library's worker threads keep spinning for a while after a call
    (OpenBLAS's for ~0.1 s, OpenMP's for milliseconds) and would take cores from the next one.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if settle:
                time.sleep(settle)
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def device_sync(dev: torch.device) -> Callable[[], None]:
    """A function that waits for ``dev``'s queued work (a no-op off CUDA)."""
    return torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)


def benchmark_batch(
    n_in: int, n_out: int, batch_size: int, seed: int, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded inputs ``(batch_size, n_in)`` (standard normal) and class labels ``(batch_size,)``."""
    gen = torch_generator(seed, "bench-data", device="cpu")
    x = torch.randn(batch_size, n_in, generator=gen).to(dev)
    y = torch.randint(0, n_out, (batch_size,), generator=gen).to(dev)
    return x, y


def mlp_label(n_in: int, hidden: Sequence[int], n_out: int) -> str:
    """How the benchmark MLP is reported, e.g. ``MLP 784-1000-1000-10 tanh``."""
    return f"MLP {n_in}-{'-'.join(map(str, hidden))}-{n_out} tanh"


def mlp_step(
    rule: LearningRule,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_out: int,
    hidden: Sequence[int],
    seed: int,
    optimizer: str = "sgd",
) -> Callable[[], None]:
    """One train step of a fresh benchmark MLP (tanh, init seeded by ``seed``) under ``rule``.

    ``optimizer``: ``sgd`` (lr 1e-3) or ``adam`` (lr 1e-4). The step zeroes the gradients,
    computes them with ``rule`` on the batch ``(x, y)`` and applies the optimizer.
    """
    model = build_model(
        "mlp",
        (x.shape[1],),
        n_out,
        hidden=list(hidden),
        activation="tanh",
        generator=torch_generator(seed, "init"),
    ).to(x.device)
    rule.attach(model, x[:2])
    opt = (
        torch.optim.SGD(model.parameters(), lr=1e-3)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=1e-4)
    )

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        rule.compute_gradients(x, y, cross_entropy)
        opt.step()

    return step
