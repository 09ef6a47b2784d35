"""Test-time local converter (TLC, Chu et al. 2022), for any backbone with global average pooling.

A network trained on 256x256 patches pools its channel statistics over 256x256 windows; applied
to a whole 1280x720 image, global pooling averages over a much larger area than in training.
TLC replaces each ``nn.AdaptiveAvgPool2d(1)`` by a stride-1 box filter whose size is 1.5x the
feature size seen at the training resolution, with replicate padding, as NAFNet's
``NAFNetLocal``/``Local_Base`` do. When the image is not larger than that base size, the pool
stays global, so outputs equal the unconverted network's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: NAFNet's base size is 1.5x the training size
BASE_FACTOR = 1.5


class LocalAvgPool2d(nn.Module):
    """Average over a ``kernel_size`` window around each position (global when the map is smaller).

    The output of the valid (unpadded) box filter is replicate-padded back to the input size:
    ``(d // 2, (d + 1) // 2)`` on each axis, where ``d`` is the size lost.
    """

    def __init__(self, kernel_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if self.kernel_size is None or (self.kernel_size[0] >= height and self.kernel_size[1] >= width):
            return F.adaptive_avg_pool2d(x, 1)
        kernel = (min(self.kernel_size[0], height), min(self.kernel_size[1], width))
        pooled = F.avg_pool2d(x, kernel, stride=1)
        lost_h, lost_w = height - pooled.shape[-2], width - pooled.shape[-1]
        return F.pad(pooled, (lost_w // 2, (lost_w + 1) // 2, lost_h // 2, (lost_h + 1) // 2), mode="replicate")


def enable_tlc(module: nn.Module, train_size: int | tuple[int, int], in_channels: int = 3) -> int:
    """Replace the global average pools of ``module`` by TLC pools sized for ``train_size``.

    Kernel sizes come from one forward pass at the training size, as in NAFNet's code: a pool that
    sees an ``h x w`` map there gets a ``1.5h x 1.5w`` kernel. Returns how many pools were replaced
    (0 means the module has no global pooling, so TLC does not apply).
    """
    height, width = (train_size, train_size) if isinstance(train_size, int) else train_size
    pools = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
                pool = LocalAvgPool2d()
                setattr(parent, name, pool)
                pools.append(pool)
    if not pools:
        return 0
    seen: dict[LocalAvgPool2d, tuple[int, int]] = {}

    def record(pool: LocalAvgPool2d, args: tuple[Tensor, ...]) -> None:  # returns None: the input is unchanged
        seen.setdefault(pool, tuple(args[0].shape[-2:]))

    hooks = [pool.register_forward_pre_hook(record) for pool in pools]
    was_training = module.training
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        module.eval()  # batch-norm statistics must not move during the sizing pass
        with torch.no_grad():
            module(torch.zeros(1, in_channels, height, width, device=device))
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    base_h, base_w = int(height * BASE_FACTOR), int(width * BASE_FACTOR)
    for pool, (feature_h, feature_w) in seen.items():
        pool.kernel_size = (base_h * feature_h // height, base_w * feature_w // width)
    return len(pools)


__all__ = [
    "LocalAvgPool2d",
    "enable_tlc",
]
