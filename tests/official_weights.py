"""Deterministic weights for an official model's key list, shared by the official-equivalence tests.

The stored reference outputs in ``tests/data/official/*_reference.pt`` were made by the official classes with
these weights, so the scheme must not change.
"""

from __future__ import annotations

import numpy as np
import torch


def official_weights(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Deterministic weights for the official key list: key ``i`` drawn from a generator seeded with ``i``."""
    state = {}
    for index, (key, shape) in enumerate(keys.items()):
        generator = torch.Generator().manual_seed(index)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 4:
            state[key] = torch.randn(shape, generator=generator) * (2.0 / np.prod(shape[1:])) ** 0.5
        elif key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        else:
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
    return state
