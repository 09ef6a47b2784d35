"""The test-time local converter: the pool itself, its sizing, and the YAML switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deblurstack import ConfigError, build_stack
from deblurstack.tlc import LocalAvgPool2d, enable_tlc


def reference_local_mean(x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """NAFNet's definition written out: window means over valid positions, then replicate padding."""
    height, width = x.shape[-2:]
    kh, kw = min(kernel[0], height), min(kernel[1], width)
    rows, cols = height - kh + 1, width - kw + 1
    valid = torch.stack(
        [
            torch.stack([x[..., i : i + kh, j : j + kw].mean(dim=(-2, -1)) for j in range(cols)], -1)
            for i in range(rows)
        ],
        -2,
    )
    pad = (width - cols) // 2, (width - cols + 1) // 2, (height - rows) // 2, (height - rows + 1) // 2
    return nn.functional.pad(valid, pad, mode="replicate")


@pytest.mark.parametrize("size, kernel", [((9, 13), (4, 6)), ((7, 5), (3, 9)), ((6, 6), (5, 5))])
def test_the_local_pool_is_a_replicate_padded_window_mean(size, kernel):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    assert torch.allclose(LocalAvgPool2d(kernel)(x), reference_local_mean(x, kernel))


def test_the_local_pool_is_global_when_the_map_fits_in_the_kernel():
    x = torch.randn(1, 4, 6, 5)
    assert torch.equal(LocalAvgPool2d((6, 5))(x), nn.functional.adaptive_avg_pool2d(x, 1))
    assert torch.equal(LocalAvgPool2d()(x), nn.functional.adaptive_avg_pool2d(x, 1))


@pytest.mark.usefixtures("test_components")
def test_kernels_are_one_and_a_half_times_the_feature_size_at_training_size():
    stack = build_stack({"stack": {"backbone": {"type": "pooled", "tlc": {"train_size": [64, 48]}}}})
    pools = [m for m in stack.backbone.modules() if isinstance(m, LocalAvgPool2d)]
    assert [p.kernel_size for p in pools] == [(96, 72), (48, 36)]  # full and half resolution
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in stack.backbone.modules())


@pytest.mark.usefixtures("test_components")
def test_tlc_equals_global_pooling_up_to_the_base_size_and_differs_beyond():
    torch.manual_seed(0)
    plain = build_stack({"stack": {"backbone": {"type": "pooled"}}}).eval()
    local = build_stack({"stack": {"backbone": {"type": "pooled", "tlc": {"train_size": 32}}}}).eval()
    local.load_state_dict(plain.state_dict())
    with torch.no_grad():
        small, large = torch.rand(1, 3, 48, 40), torch.rand(1, 3, 120, 96)  # base size is 48
        assert torch.equal(plain(small), local(small))
        assert not torch.allclose(plain(large), local(large))
        assert local(large).shape == large.shape


def test_enable_tlc_reports_when_there_is_no_global_pooling():
    assert enable_tlc(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1)), 64) == 0


@pytest.mark.usefixtures("test_components")
def test_tlc_on_a_backbone_without_global_pooling_is_a_config_error():
    with pytest.raises(
        ConfigError,
        match=r"stack.backbone.tlc: backbone 'unet' has no global average pooling, so TLC "
        r"does not apply \(backbones with it: .*pooled",
    ):
        build_stack({"stack": {"backbone": {"type": "unet", "tlc": {"train_size": 256}}}})
    with pytest.raises(ConfigError, match=r"stack.backbone.tlc: must be \{train_size: N\}"):
        build_stack({"stack": {"backbone": {"type": "pooled", "tlc": {"size": 256}}}})


@pytest.mark.usefixtures("test_components")
def test_the_sizing_pass_leaves_batch_norm_statistics_alone():
    class WithNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(3)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            return x * self.pool(self.norm(x))

    module = WithNorm().train()
    before = module.norm.running_mean.clone()
    assert enable_tlc(module, 16) == 1
    assert torch.equal(module.norm.running_mean, before) and module.training
