"""The matrix-multiply floor the inference benchmarks compare against (a helper module, not a benchmark).

A forward pass cannot beat its convolutions and matrix products run at the machine's best float32 matrix
multiply rate. `macs` counts those multiply-accumulates with torch.utils.flop_counter (on the meta device
where the model allows, so counting costs no compute); `gemm_rate` measures the rate of ``torch.mm`` and
`conv_rate` that of a dense 3x3 convolution (oneDNN's convolutions run faster than ``torch.mm`` on some
CPUs), on the current threads, in the same run as the timings they are compared with.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["best_rate", "conv_rate", "gemm_rate", "macs", "meta_macs"]


def _best_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up: thread pool, primitive caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_rate(n: int = 2048, repeats: int = 8) -> float:
    """Best float32 ``torch.mm`` rate of ``repeats`` n x n products after a warm-up, in FLOP/s (2 n^3 each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), repeats)


def conv_rate(channels: int = 64, size: int = 256, repeats: int = 8) -> float:
    """Best float32 rate of a channels_last 3x3 convolution, ``channels`` to ``channels`` at size^2, in FLOP/s."""
    image = torch.randn(1, channels, size, size).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, channels, 3, 3).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = _best_seconds(lambda: torch.nn.functional.conv2d(image, weight, padding=1), repeats)
    return 2 * channels * channels * 9 * size * size / seconds


def best_rate() -> float:
    """The floor's rate: the better of ``gemm_rate()`` and ``conv_rate()``, in FLOP/s."""
    return max(gemm_rate(), conv_rate())


def macs(forward: Callable[[], object]) -> float:
    """Multiply-accumulates of the convolutions and matrix products that ``forward()`` runs, without autograd."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        forward()
    return counter.get_total_flops() / 2


def meta_macs(build: Callable[[], torch.nn.Module], size: int) -> float:
    """Multiply-accumulates of one forward of ``build()`` on a 1 x 3 x size x size input, both on the meta device
    (no memory, no compute); raises where the model cannot run there."""
    with torch.device("meta"):
        model, image = build(), torch.empty(1, 3, size, size)
    return macs(lambda: model(image))
