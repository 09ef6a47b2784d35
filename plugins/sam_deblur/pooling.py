"""SAM-Deblur's Mask Average Pooling (MAP) unit, written from ``SegNAFNet_arch.py`` (HPLQAQ/SAM-Deblur).

The official ``mask_average`` loops over the batch and broadcasts ``M x H x W x C`` per image (M bool masks, the
level sets of a label map). Here the groups are the level sets of the label map itself, and each group's value is
computed once from its sums and size: O(B H W C) memory whatever the number of groups. CPU inference in float32 or
float64 runs two numba kernels (``kernels.py``: the group sums of the projection from column prefix sums of the
image, then the broadcast; about 4x faster than the torch ops on one thread at 1280x720). Everything else (autograd,
GPU, half precision, tracing, compiling) runs torch ops: one ``scatter_add_`` for the sums and one ``gather`` for
the broadcast, for the whole batch.

Deliberate differences from the official code:

* ``pre_seg_in`` (1x1) is folded into ``pre_seg`` (3x3): both are linear and have no activation between them, so
  one 3x3 conv with the composed weight computes the same map (up to float rounding), in less time;
* without ``release_compat`` masks have value 1 (the paper's MAP: plain group means); the released checkpoints
  were trained with masks of value 1/255 (bool masks divided by 255), which ``release_compat=True`` reproduces;
* without ``release_compat`` nothing is padded: the convolutions see the image as it is (the backbone pads later).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import Annotated

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from deblurstack import Prior, PriorOutput, Stochastic, pad_to_multiple

#: mask value in the released checkpoints: ``masks2tensor`` divides SAM-Deblur's bool masks by 255
RELEASE_MASK_VALUE = 1 / 255
#: SegNAFNet pads image and masks to 2 ** len(enc_blk_nums) = 16 before ``pre_seg``
RELEASE_PAD = 16
#: the official epsilons of ``mask_average``
EPS = 1e-8


class MaskAveragePooling(Stochastic, Prior):
    """MAP: ``f = conv1x1(conv3x3(image))`` (3 -> s -> s channels), then each pixel gets its group's mean of f.

    Groups are the distinct values of each sample's label map ``aux["masks"]`` (``B x H x W``, integer).
    In training with ``dropout > 0``, exactly ``floor(dropout * M_b)`` of the ``M_b`` groups of sample ``b`` are
    dropped, chosen uniformly and afresh per call; dropped pixels all get one mean per sample and channel (their
    pooled mean, the official "uncovered" term). Never in eval.

    ``release_compat=True`` reproduces the released SegNAFNet checkpoints exactly: masks of value a = 1/255, so a
    pixel of a kept group gets ``a * mean_group + (1 - a) * u`` and every other pixel gets ``u``, where ``u`` is the
    mean of f weighted ``1 - a`` on covered and 1 on uncovered pixels (official epsilons included); the image is
    zero-padded to a multiple of 16 before the convolutions, padded pixels count as uncovered, and the output is
    cropped back. The stack's NAFNet then pads the prior channels with zeros again (the official model keeps the
    pooled values there), so outputs equal the official ones exactly only when H and W are multiples of 16
    (GoPro's 1280 x 720 is); otherwise they differ within 16 pixels of the bottom and right borders (by up to
    0.2 with random weights) and slightly elsewhere, through NAFNet's global channel attention (about 1e-3).

    Args:
        seg_channels: channels of the learned projection, and of the output (SAM-Deblur: 2).
        dropout: fraction of groups dropped per sample in training (SAM-Deblur: 0.5; the MAP ablation: 0).
        release_compat: reproduce the released checkpoints (masks of value 1/255, padding to 16).
    """

    def __init__(
        self,
        seg_channels: Annotated[int, Field(ge=1, le=4096)] = 2,
        dropout: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
        release_compat: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = seg_channels
        self.dropout = dropout
        self.release_compat = release_compat
        # the official names, so release files map onto them one to one
        self.pre_seg = nn.Conv2d(3, seg_channels, kernel_size=3, padding=1)
        self.pre_seg_in = nn.Conv2d(seg_channels, seg_channels, kernel_size=1)

    def claim_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, str]:
        """SegNAFNet's ``pre_seg.*`` and ``pre_seg_in.*`` are this module's parameters of the same names."""
        return {key: key for key in self.state_dict() if key in state}

    def composed_weights(self) -> tuple[Tensor, Tensor]:
        """Weight and bias of the one 3x3 conv that equals ``pre_seg_in(pre_seg(x))``."""
        inner = self.pre_seg_in.weight[:, :, 0, 0]
        weight = (inner @ self.pre_seg.weight.flatten(1)).view_as(self.pre_seg.weight)
        return weight, inner @ self.pre_seg.bias + self.pre_seg_in.bias

    def project(self, image: Tensor) -> Tensor:
        """``pre_seg_in(pre_seg(image))`` as one 3x3 conv with the composed weight and bias."""
        return F.conv2d(image, *self.composed_weights(), padding=1)

    def forward(self, image: Tensor, aux: Mapping[str, Tensor]) -> PriorOutput:
        labels = aux["masks"]
        batch, channels, height, width = image.shape
        if channels != 3 or not image.numel():
            raise ValueError(f"sam_map: expects a non-empty B x 3 x H x W image, got {tuple(image.shape)}")
        if labels.shape != (batch, height, width) or labels.is_floating_point():
            raise ValueError(
                f"masks must be an integer label map {(batch, height, width)}, got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.dtype == torch.bool:
            labels = labels.to(torch.uint8)
        elif labels.dtype in (torch.uint16, torch.uint32, torch.uint64):  # torch has no aminmax for them
            labels = labels.long()  # uint64 labels past 2**63 wrap to negative ones: still one id per label
        sums, counts, ids, groups, kernels = self._group_sums(image, labels)
        uncovered = None  # no group pools its pixels with others'
        dropout = self.training and self.dropout > 0
        if self.release_compat or dropout:
            uncovered = torch.zeros_like(counts, dtype=torch.bool)
            uncovered[:, groups:] = True  # release_compat's padding
            if dropout:
                uncovered[:, :groups] = drop_groups(counts[:, :groups] > 0, self.dropout, self.generator)
        mask_value = RELEASE_MASK_VALUE if self.release_compat else None
        table = group_values(sums, counts.to(sums.dtype), uncovered, mask_value).to(image.dtype)
        out = kernels.broadcast(table, ids) if kernels else broadcast(table, ids)
        return PriorOutput(channels=out[..., :height, :width])

    def _group_sums(self, image: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, int, ModuleType | None]:
        """Each group's sum of the projection and its size, the ids to broadcast with, the number of label groups
        (release_compat's padding group comes after them), and the kernels if they did the work."""
        kernels = load_kernels() if self._suits_kernels(image) else None
        weight, bias = self.composed_weights()
        if kernels and not self.release_compat:  # the labels as they are: no pass over them for their range
            pooled = kernels.project_and_sum(image, labels, weight, bias)
            if isinstance(pooled, tuple):
                return *pooled, pooled[1].shape[1], kernels
            if pooled is kernels.Declined.NOT_FINITE:
                kernels = None
        ids, groups = group_ids(labels)  # compact ids: negative or wide labels, release_compat, the torch ops
        height, width = image.shape[-2:]
        if self.release_compat:  # pad as SegNAFNet.check_image_size; padded pixels form one more, uncovered group
            image = pad_to_multiple(image, RELEASE_PAD)
            ids = F.pad(ids.long(), (0, image.shape[-1] - width, 0, image.shape[-2] - height), value=groups)
        total = groups + 1 if self.release_compat else groups
        pooled = kernels.project_and_sum(image, ids, weight, bias, total) if kernels else None
        if isinstance(pooled, tuple):  # compact ids always fit: the kernels decline only NaN or inf pixels here
            return *pooled, groups, kernels
        ids = ids.long()  # the torch ops (also for NaN or inf pixels, which the kernels decline) index with int64
        features = F.conv2d(image, weight, bias, padding=1)
        return segment_sums(features, ids, total), group_sizes(ids, total), ids, groups, None

    def _suits_kernels(self, image: Tensor) -> bool:
        """Whether the numba kernels can run: CPU float inference without autograd, outside tracing and compiling."""
        tensors = (image, *self.parameters())
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        return (
            image.device.type == "cpu"
            and image.dtype in (torch.float32, torch.float64)
            and image.dtype == self.pre_seg.weight.dtype  # a mix goes to the ops, which refuse it as conv2d does
            and not needs_grad
            and not any(forward_ad.unpack_dual(t).tangent is not None for t in tensors)  # forward-mode AD
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        )


@functools.cache
def load_kernels() -> ModuleType | None:
    """The numba kernels, imported on first use (numba adds about 0.15 s to start-up); None if they cannot load.

    Numba compiles them on the first call with new argument dtypes (20 to 30 s on 2 cores) and caches the machine
    code next to ``kernels.py``, or in ``NUMBA_CACHE_DIR`` (default ``~/.cache/numba``) where that folder is
    read-only. numba is optional (``pip install 'deblurstack[fast]'``): without it MAP runs on torch ops (slower,
    same results); where no cache folder is writable, or an installed numba is broken, it does so after one warning.
    """
    try:
        from deblurstack.plugins.sam_deblur import kernels
    except ModuleNotFoundError as error:
        if error.name != "numba":
            raise
        return None  # the extra is not installed: nothing to warn about
    except (ImportError, RuntimeError) as error:  # RuntimeError: numba found no writable cache folder
        warnings.warn(f"sam_map: numba kernels unavailable ({error}); pooling with torch ops", stacklevel=2)
        return None
    return kernels


def group_ids(labels: Tensor) -> tuple[Tensor, int]:
    """Per-sample group ids ``B x H x W`` in ``[0, groups)``: within a sample, equal ids iff equal labels.

    Ids of different samples are independent (the pooling keeps the batch dimension). A label range no wider
    than the image (SAM-Deblur's 0..255 codes, say) is used as it is: some ids may then be empty, which costs
    nothing; such labels keep their dtype if they start at 0 (the kernels read uint8 maps as they are). Wider
    ranges are compacted per sample with one sort over (sample, label) pairs.
    """
    batch = labels.shape[0]
    low, high = (int(v) for v in torch.aminmax(labels))
    span = high - low + 1
    if span <= labels[0].numel():
        return (labels.long() - low if low else labels), span  # int64: the shifted labels may not fit the dtype
    flat = labels.reshape(batch, -1).long()
    if span * batch >= 2**62:  # too wide to pair with the sample index in int64: compact the labels first
        flat = torch.unique(flat, return_inverse=True)[1]
        low, span = 0, int(flat.max()) + 1
    offsets = span * torch.arange(batch, device=labels.device)
    keys, ids = torch.unique(flat - low + offsets[:, None], return_inverse=True)  # sorted by sample, then label
    ids = ids - torch.searchsorted(keys, offsets)[:, None]  # minus the index of the sample's first group
    return ids.view_as(labels), int(ids.max()) + 1


def drop_groups(present: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Choose exactly ``floor(fraction * M_b)`` of the ``M_b`` present groups of each sample, uniformly.

    Vectorised ``torch.randperm(M_b)[:K_b]``: the ranks of iid uniform keys are a uniform random permutation.
    The k-th present group of a sample gets the k-th key, so the groups dropped depend on the present groups'
    order only, not on how wide the table is (the kernels' tables grow to a power of two; the ops' do not).
    The keys are drawn on the CPU from ``generator`` (the module's own: see ``Stochastic``), then moved.
    """
    count = present.sum(1)
    drop = torch.floor(count.double() * fraction).long()  # float64, as the official int(p * M) in Python
    keys = torch.rand(present.shape[0], max(int(count.max()), 1), generator=generator).to(present.device)
    order = (present.cumsum(1) - 1).clamp_min(0)  # each present group's place among its sample's present groups
    keys = keys.gather(1, order).masked_fill(~present, 2.0)  # absent groups rank last
    rank = keys.argsort(1).argsort(1)
    return present & (rank < drop[:, None])


def group_sizes(ids: Tensor, groups: int) -> Tensor:
    """Pixels per group, ``B x groups`` int64 (one ``bincount`` over per-sample offset int64 ids)."""
    batch = ids.shape[0]
    flat = ids.reshape(batch, -1)
    if batch > 1:
        flat = flat + groups * torch.arange(batch, device=ids.device)[:, None]
    return torch.bincount(flat.reshape(-1), minlength=batch * groups).view(batch, groups)


def segment_sums(features: Tensor, ids: Tensor, groups: int) -> Tensor:
    """``B x C x groups``: the sums of ``features`` (``B x C x H x W``) over each group of the int64 ``ids``."""
    batch, channels = features.shape[:2]
    index = ids.reshape(batch, 1, -1).expand(batch, channels, -1)
    return features.new_zeros(batch, channels, groups).scatter_add_(2, index, features.reshape(batch, channels, -1))


def group_values(sums: Tensor, counts: Tensor, uncovered: Tensor | None, mask_value: float | None = None) -> Tensor:
    """``B x C x groups``: the value MAP gives the pixels of each group, from its sums and sizes.

    ``sums`` (``B x C x groups``) and ``counts`` (``B x groups``) are each group's feature sums and pixels; the
    groups marked in ``uncovered`` (``B x groups``) all get one pooled mean per sample and channel.
    ``mask_value`` None: the plain definition (masks of value 1); a float: the official ``mask_average`` with
    masks of that value, epsilons included. ``uncovered`` None: no group marked, with the plain definition.
    """
    if uncovered is None:  # each group its own mean
        return sums / counts.clamp_min(1)[:, None]
    if mask_value is None:
        weight = uncovered.to(sums.dtype)  # pixels in the pooled mean
        pooled = (sums * weight[:, None]).sum(2) / (counts * weight).sum(1).clamp_min(1)[:, None]
        means = sums / counts.clamp_min(1)[:, None]
    else:
        a = mask_value
        # official: remaining mask U = 1 - clamp(sum of masks, 0, 1) is 1 - a on covered pixels, 1 elsewhere
        weight = torch.where(uncovered, 1.0, 1.0 - a).to(sums.dtype)
        pooled = (sums * weight[:, None]).sum(2) / ((counts * weight).sum(1) + EPS)[:, None]
        # official: avg = sum(F * a) / (sum(a) + eps), then avg * a + u * (1 - a) on the group's pixels
        means = a * (a * sums) / (a * counts + EPS)[:, None] + (1.0 - a) * pooled[..., None]
    return torch.where(uncovered[:, None], pooled[..., None], means)


def broadcast(table: Tensor, ids: Tensor) -> Tensor:
    """``B x C x H x W``: each pixel gets ``table[b, :, ids[b, y, x]]`` (one ``gather``; ``ids`` int64)."""
    batch, channels = table.shape[:2]
    index = ids.reshape(batch, 1, -1).expand(batch, channels, -1)
    return table.gather(2, index).view(batch, channels, *ids.shape[1:])
