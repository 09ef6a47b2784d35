"""SAM-Deblur priors: MAP against its definition and the official dense formula, mask dropout, CAT, official keys.

The definition and the official dense ``mask_average`` (HPLQAQ/SAM-Deblur 9e0c8cf, SegNAFNet_arch.py) are written
here from their descriptions as slow explicit code. tests/data/official/sam_deblur_segnafnet_keys.json holds the
key names and shapes of the official SegNAFNet (GoPro config: width 32, seg_channel 2).
"""

from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from deblurstack import build_stack, save_atomic
from deblurstack.plugins.sam_deblur import kernels, pooling
from deblurstack.plugins.sam_deblur.cat import LabelChannel
from deblurstack.plugins.sam_deblur.pooling import MaskAveragePooling, drop_groups, group_ids

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
A = 1 / 255  # mask value of the released checkpoints
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def prior(seed: int = 0, **params) -> MaskAveragePooling:
    torch.manual_seed(seed)
    return MaskAveragePooling(**params).eval()


#: MAP's two forward paths: the numba kernels (inference without autograd) and torch ops (autograd, GPU)
PATHS = ["kernels", "autograd"]


def pooled(module: MaskAveragePooling, image: torch.Tensor, labels: torch.Tensor, path: str) -> torch.Tensor:
    """MAP's output on ``path``: autograd recording selects the torch-ops path, its absence the kernels."""
    with torch.set_grad_enabled(path == "autograd"):
        return module(image, {"masks": labels}).channels.detach()


def random_labels(groups: list[int], height: int, width: int, mode: str, seed: int) -> torch.Tensor:
    """A B x H x W label map, sample b with labels drawn from ``groups[b]`` values spread as ``mode`` says."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, m, (height, width), generator=generator) for m in groups])
    if mode == "offset":  # negative labels, dense range
        return codes - 7
    if mode == "wide":  # a range much wider than the image: compacted by sorting
        return codes * 10**12 - 3
    if mode == "extreme":  # too wide to pair with the sample index in int64
        return torch.where(codes % 2 == 0, INT64_MIN + codes, INT64_MAX - codes)
    return codes


def definition(features: torch.Tensor, labels: torch.Tensor, dropped: list[set[int]] | None = None) -> torch.Tensor:
    """MAP by its definition, one sample and one group at a time: each pixel gets its group's mean; the pixels of
    dropped groups all get the mean over their union."""
    out = torch.empty_like(features)
    for b in range(features.shape[0]):
        drop = dropped[b] if dropped else set()
        pooled = torch.zeros(labels[b].shape, dtype=torch.bool)
        for value in torch.unique(labels[b]).tolist():
            where = labels[b] == value
            if value in drop:
                pooled |= where
                continue
            for c in range(features.shape[1]):
                out[b, c][where] = features[b, c][where].mean()
        for c in range(features.shape[1]):
            if pooled.any():
                out[b, c][pooled] = features[b, c][pooled].mean()
    return out


def official_dense(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """SAM-Deblur's ``mask_average`` for one image as described: features C x H x W, masks M x 1 x H x W (value a),
    an M x H x W x C broadcast with the official 1e-8 epsilons."""
    image = features.permute(1, 2, 0)[None]  # 1 x H x W x C
    m = masks.squeeze(1)[..., None]  # M x H x W x 1
    averages = (image * m).sum(dim=(1, 2), keepdim=True) / (m.sum(dim=(1, 2), keepdim=True) + 1e-8)
    result = (averages * m).sum(dim=0)
    remaining = 1 - m.sum(dim=0, keepdim=True).clamp(0, 1)
    remaining_average = (image * remaining).sum(dim=(1, 2), keepdim=True) / (remaining.sum() + 1e-8)
    result = result + (remaining_average * remaining).squeeze(0)
    return result.permute(2, 0, 1)


def official_masks(labels: torch.Tensor, height: int, width: int, dropped: set[int] = frozenset()) -> torch.Tensor:
    """Grouped masks of one label map as SAM-Deblur feeds them: level sets, bool / 255, zero-padded, dropped = 0."""
    values = torch.unique(labels).tolist()
    masks = torch.stack([(labels == v).float() * (0.0 if v in dropped else A) for v in values])[:, None]
    return F.pad(masks, (0, width - labels.shape[-1], 0, height - labels.shape[-2]))


def groups_of(labels: torch.Tensor) -> list[list[int]]:
    return [torch.unique(sample).tolist() for sample in labels]


# ---------------------------------------------------------------------------------------------- the definition

shapes = st.tuples(st.integers(1, 3), st.integers(1, 11), st.integers(1, 11))


@settings(max_examples=60, deadline=None, database=None)
@given(
    shape=shapes,
    groups=st.lists(st.integers(1, 9), min_size=3, max_size=3),
    channels=st.integers(1, 3),
    mode=st.sampled_from(["dense", "offset", "wide", "extreme"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
    path=st.sampled_from(PATHS),
)
def test_map_equals_its_definition_on_random_label_maps(shape, groups, channels, mode, dtype, seed, path):
    batch, height, width = shape
    labels = random_labels(groups[:batch], height, width, mode, seed)
    image = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    module = prior(seed, seg_channels=channels).to(dtype)
    out = pooled(module, image, labels, path)
    with torch.no_grad():
        expected = definition(module.project(image), labels)
    assert out.shape == (batch, channels, height, width) and out.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12  # float64 all the way through, no float32 step
    torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance / 10)


@settings(max_examples=40, deadline=None, database=None)
@given(
    groups=st.lists(st.integers(1, 12), min_size=3, max_size=3),
    fraction=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]),
    mode=st.sampled_from(["dense", "wide"]),
    seed=st.integers(0, 2**16),
    path=st.sampled_from(PATHS),
)
def test_dropout_pools_exactly_floor_p_m_groups_per_sample(groups, fraction, mode, seed, path):
    labels = random_labels(groups, 9, 10, mode, seed)
    image = torch.rand(3, 3, 9, 10, generator=torch.Generator().manual_seed(seed))
    module = prior(seed, dropout=fraction).train()
    torch.manual_seed(seed)
    out = pooled(module, image, labels, path)
    with torch.no_grad():
        features = module.project(image)
    kept = definition(features, labels)  # every group its own mean
    dropped = []
    for b, values in enumerate(groups_of(labels)):
        # groups whose pixels did not get their own mean took the pooled one (with one dropped group the two agree)
        # (at the tolerance of the final check: the paths sum in different orders, and a mean near 0 differs by ~1e-7)
        where = [labels[b] == v for v in values]
        own = [torch.allclose(out[b][:, w], kept[b][:, w], rtol=1e-5, atol=1e-6) for w in where]
        took = {v for v, same in zip(values, own, strict=True) if not same}
        expected = int(fraction * len(values))  # the official int(p * M)
        assert len(took) == (expected if expected >= 2 else 0)
        pooled_values = {tuple(out[b][:, labels[b] == v][:, 0].tolist()) for v in took}
        assert len(pooled_values) <= 1  # one pooled mean per sample and channel
        distinct = torch.unique(out[b].flatten(1), dim=1).shape[1]
        assert distinct == len(values) - expected + min(expected, 1)
        dropped.append(took)
    torch.testing.assert_close(out, definition(features, labels, dropped), rtol=1e-5, atol=1e-6)


@settings(max_examples=50, deadline=None, database=None)
@given(
    groups=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_drop_groups_chooses_exactly_floor_p_m_of_the_present_groups(groups, fraction, seed):
    generator = torch.Generator().manual_seed(seed)
    present = torch.stack([torch.randperm(48, generator=generator) < m for m in groups])
    torch.manual_seed(seed)
    dropped = drop_groups(present, fraction)
    assert not (dropped & ~present).any()
    assert dropped.sum(1).tolist() == [int(fraction * m) for m in groups]


def test_the_drop_count_is_rounded_as_the_official_python_int():
    # 0.57 * 100 is 56.99999999999999 in float64 (the official int(p * M) gives 56) but 57 in float32
    assert drop_groups(torch.ones(1, 100, dtype=torch.bool), 0.57).sum().item() == int(0.57 * 100) == 56


def test_dropout_varies_between_calls_is_uniform_and_never_acts_in_eval():
    labels = torch.arange(20).repeat_interleave(5).view(1, 10, 10)
    image = torch.rand(1, 3, 10, 10)
    module = prior(dropout=0.5).train()
    with torch.no_grad():
        outputs = [module(image, {"masks": labels}).channels for _ in range(3)]
    assert not torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[1], outputs[2])
    present = torch.ones(4000, 20, dtype=torch.bool)
    frequency = drop_groups(present, 0.5).float().mean(0)  # each group dropped with probability 1/2
    assert (frequency - 0.5).abs().max() < 0.05
    for p in (0.5, 1.0):
        module = prior(dropout=p).eval()
        with torch.no_grad():
            out = module(image, {"masks": labels}).channels
            torch.testing.assert_close(out, definition(module.project(image), labels))


def test_group_ids_are_per_sample_and_compact_for_wide_labels():
    labels = torch.tensor([[[5, 10**15], [5, -(10**15)]], [[7, 7], [7, 7]]])
    ids, groups = group_ids(labels)
    assert groups == 3 and ids.tolist() == [[[1, 2], [1, 0]], [[0, 0], [0, 0]]]
    ids, groups = group_ids(torch.tensor([[[3, 4], [6, 3]]]))  # a narrow range is used as it is, minus its low
    assert groups == 4 and ids.tolist() == [[[0, 1], [3, 0]]]


def test_gradients_reach_both_convolutions_and_equal_the_definitions():
    labels = random_labels([4, 6], 12, 9, "dense", 1)
    image = torch.rand(2, 3, 12, 9)
    weights = torch.rand(2, 2, 12, 9)
    for release in (False, True):
        module = prior(release_compat=release).train()
        (module(image, {"masks": labels}).channels * weights).sum().backward()
        grads = [p.grad.clone() for p in module.parameters()]
        assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
        module.zero_grad()
        features = module.project(F.pad(image, (0, 7, 0, 4)) if release else image)
        if release:
            masks = [official_masks(labels[b], 16, 16) for b in range(2)]
            reference = torch.stack([official_dense(features[b], masks[b]) for b in range(2)])[..., :12, :9]
        else:
            reference = definition(features, labels)
        (reference * weights).sum().backward()
        for ours, theirs in zip(grads, (p.grad for p in module.parameters()), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_the_folded_projection_is_the_two_official_convolutions():
    module = prior(seg_channels=3)
    image = torch.rand(2, 3, 13, 8)
    with torch.no_grad():
        torch.testing.assert_close(module.project(image), module.pre_seg_in(module.pre_seg(image)))


def test_masks_must_be_an_integer_label_map_of_the_image_size():
    module = prior()
    with pytest.raises(ValueError, match="integer label map"):
        module(torch.rand(1, 3, 4, 4), {"masks": torch.zeros(1, 1, 4, 4, dtype=torch.int64)})
    with pytest.raises(ValueError, match="integer label map"):
        module(torch.rand(1, 3, 4, 4), {"masks": torch.zeros(1, 4, 4)})


@pytest.mark.parametrize("shape", [(1, 3, 4, 0), (1, 3, 0, 5), (1, 1, 4, 4), (1, 4, 4, 4)])
@pytest.mark.parametrize("path", PATHS)
def test_map_refuses_an_empty_image_or_one_without_three_channels(shape, path):
    # the kernels index without bounds checks: such an image would read past its arrays there
    labels = torch.zeros(shape[0], *shape[2:], dtype=torch.long)
    with pytest.raises(ValueError, match=r"sam_map: expects a non-empty B x 3 x H x W image"):
        pooled(prior(), torch.rand(shape), labels, path)
    with pytest.raises(ValueError, match=r"project_and_sum: needs a B x 3 x H x W image"):
        kernels.project_and_sum(torch.rand(shape), labels, torch.rand(2, 3, 3, 3), torch.rand(2))


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64, torch.int8])
def test_map_takes_labels_of_every_integer_dtype_alike_on_both_paths(dtype):
    labels = random_labels([5, 9], 7, 12, "dense", 3).to(dtype)
    image, module = torch.rand(2, 3, 7, 12), prior()
    with torch.no_grad():
        expected = definition(module.project(image), labels.long())
    for path in PATHS:
        torch.testing.assert_close(pooled(module, image, labels, path), expected, rtol=1e-5, atol=1e-6)


def test_dropout_drops_the_same_groups_on_both_paths_for_one_seed():
    # labels 3 to 13: the kernels' tables hold ids 0 to 15 as they are, the ops' 11 ids shifted by 3
    labels = random_labels([11, 11], 8, 9, "dense", 5) + 3
    image, module = torch.rand(2, 3, 8, 9), prior(dropout=0.5).train()
    outputs = []
    for path in PATHS:
        module.generator.manual_seed(7)
        outputs.append(pooled(module, image, labels, path))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    module.generator.manual_seed(8)
    assert not torch.allclose(pooled(module, image, labels, "kernels"), outputs[0], rtol=1e-5, atol=1e-6)


def test_dropout_draws_from_the_module_generator_not_the_global_one():
    """What makes resumed runs exact: the drops depend on the prior's own generator state alone."""
    labels = random_labels([11, 11], 8, 9, "dense", 5)
    image, module = torch.rand(2, 3, 8, 9), prior(dropout=0.5).train()
    outputs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        module.generator.manual_seed(7)
        outputs.append(pooled(module, image, labels, "autograd"))
    torch.testing.assert_close(outputs[0], outputs[1])
    before = torch.get_rng_state()
    pooled(module, image, labels, "autograd")
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is left alone


# -------------------------------------------------------------------------------- release: the official formula


@pytest.mark.parametrize("size", [(32, 48), (16, 16), (37, 29), (5, 21)])
@pytest.mark.parametrize("mode", ["dense", "wide"])
@pytest.mark.parametrize("path", PATHS)
def test_release_compat_equals_the_official_dense_formula(size, mode, path):
    height, width = size
    padded = (-(-height // 16) * 16, -(-width // 16) * 16)
    labels = random_labels([3, 11], height, width, mode, 3)
    image = torch.rand(2, 3, height, width)
    module = prior(release_compat=True)
    out = pooled(module, image, labels, path)
    with torch.no_grad():
        features = module.project(F.pad(image, (0, padded[1] - width, 0, padded[0] - height)))
        expected = torch.stack([official_dense(features[b], official_masks(labels[b], *padded)) for b in range(2)])
    # exact where H, W are multiples of 16; otherwise the official output is cropped to the valid region
    torch.testing.assert_close(out, expected[..., :height, :width], rtol=1e-5, atol=1e-6)


def test_release_compat_with_dropout_zeroes_the_dropped_masks_as_the_official(monkeypatch):
    labels = random_labels([6, 9], 20, 18, "dense", 4)
    image = torch.rand(2, 3, 20, 18)
    chosen = [{0, 3, 4}, {1, 2, 5, 8}]
    fixed = torch.tensor([[v in chosen[b] for v in range(9)] for b in range(2)])
    monkeypatch.setattr(pooling, "drop_groups", lambda present, fraction, generator: fixed & present)
    module = prior(release_compat=True, dropout=0.5).train()
    with torch.no_grad():
        out = module(image, {"masks": labels}).channels
        features = module.project(F.pad(image, (0, 14, 0, 12)))
        masks = [official_masks(labels[b], 32, 32, chosen[b]) for b in range(2)]
        expected = torch.stack([official_dense(features[b], masks[b]) for b in range(2)])[..., :20, :18]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_without_release_compat_masks_act_with_value_one_and_nothing_is_padded():
    labels = random_labels([5], 16, 16, "dense", 5)
    image = torch.rand(1, 3, 16, 16)
    module = prior()
    with torch.no_grad():
        out = module(image, {"masks": labels}).channels
        ones = official_masks(labels[0], 16, 16) * 255  # the official formula with masks of value 1
        torch.testing.assert_close(out[0], official_dense(module.project(image)[0], ones), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------- CAT


def test_cat_is_the_label_map_over_255():
    labels = torch.randint(0, 256, (2, 7, 5))
    out = LabelChannel()(torch.rand(2, 3, 7, 5), {"masks": labels}).channels
    assert out.shape == (2, 1, 7, 5) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], labels.float() / 255)
    assert torch.equal(
        LabelChannel(scale=1.0)(torch.rand(2, 3, 7, 5), {"masks": labels}).channels[:, 0], labels.float()
    )


# --------------------------------------------------------------------------------- official files in the stack

SMALL = {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1, 1, 1, 1], "dec_blk_nums": [1, 1, 1, 1]}


def official_file(keys: str, path: Path) -> dict[str, torch.Tensor]:
    """Random tensors under the official key names and shapes, saved as a release file ({"params": ...})."""
    generator = torch.Generator().manual_seed(0)
    state = {k: 0.1 * torch.randn(s, generator=generator) for k, s in json.loads((OFFICIAL / keys).read_text()).items()}
    save_atomic({"params": state}, path)
    return state


@pytest.mark.usefixtures("builtin_plugin_manager")
@pytest.mark.parametrize(
    "keys, priors",
    [
        ("sam_deblur_segnafnet_keys.json", [{"type": "sam_map", "seg_channels": 2}]),
        ("sam_deblur_masknafnet_keys.json", [{"type": "sam_cat"}]),
    ],
)
def test_official_w32_files_load_strictly_through_stack_checkpoint(tmp_path, keys, priors):
    state = official_file(keys, tmp_path / "official.pth")
    checkpoint = {"path": str(tmp_path / "official.pth"), "key": "params", "strict": True}
    whole = build_stack({"stack": {"priors": priors, "backbone": {"type": "nafnet.w32"}, "checkpoint": checkpoint}})
    parts = build_stack({"stack": {"priors": priors, "backbone": {"type": "nafnet.w32"}}})
    prior_keys = {k for k in state if k.startswith("pre_seg")}
    parts.priors[0].load_state_dict({k: state[k] for k in prior_keys}, strict=True)
    parts.backbone.load_state_dict({k: v for k, v in state.items() if k not in prior_keys}, strict=True)
    image, labels = torch.rand(1, 3, 16, 16), random_labels([5], 16, 16, "dense", 0)
    with torch.no_grad():
        assert torch.equal(whole.eval()(image, masks=labels), parts.eval()(image, masks=labels))
    assert torch.equal(whole.backbone.intro.weight, state["intro.weight"])


@pytest.mark.usefixtures("builtin_plugin_manager")
def test_a_sam_map_stack_builds_from_yaml_with_release_compat(tmp_path):
    config = tmp_path / "map.yaml"
    width = ", ".join(f"{k}: {v}" for k, v in SMALL.items())
    config.write_text(f"stack:\n  priors: [{{type: sam_map.release}}]\n  backbone: {{type: nafnet, {width}}}\n")
    stack = build_stack(str(config)).eval()
    assert stack.backbone.intro.in_channels == 5 and stack.priors[0].release_compat
    labels = random_labels([4], 21, 35, "dense", 0)
    with torch.no_grad():
        assert stack(torch.rand(1, 3, 21, 35), masks=labels).shape == (1, 3, 21, 35)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.bool])
@pytest.mark.parametrize("path", PATHS)
def test_label_maps_of_any_integer_dtype_give_the_same_output(dtype, path):
    mode = "offset" if dtype == torch.int8 else "dense"  # int8: negative labels, shifted past the dtype's range
    labels = random_labels([2, 2] if dtype == torch.bool else [130, 5], 12, 10, mode, 3)
    image = torch.rand(2, 3, 12, 10)
    expected = pooled(prior(seg_channels=2), image, labels, path)
    assert torch.equal(pooled(prior(seg_channels=2), image, labels.to(dtype), path), expected)


# ------------------------------------------------------------------------------------- the inference kernels


def test_the_kernels_read_ids_as_uint8_or_int64_only():
    """Each argument dtype is a specialisation numba compiles on first use (20 to 30 s on 2 cores): label maps of
    every other integer dtype are widened to int64 first, and give the same sums."""
    labels = random_labels([6, 6], 9, 11, "dense", 2)
    image, weight, bias = torch.rand(2, 3, 9, 11), torch.rand(4, 3, 3, 3), torch.rand(4)
    expected = kernels.project_and_sum(image, labels, weight, bias)
    for dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        sums, counts, _ = kernels.project_and_sum(image, labels.to(dtype), weight, bias)
        torch.testing.assert_close(sums, expected[0])
        assert torch.equal(counts, expected[1])
    ids_dtypes = {str(signature[1].dtype) for signature in kernels._project_and_sum.signatures}
    assert ids_dtypes <= {"uint8", "int64"}, ids_dtypes


@pytest.fixture
def kernel_calls(monkeypatch) -> list[int]:
    """One entry per forward that took the kernels."""
    calls = []
    monkeypatch.setattr(pooling, "load_kernels", lambda: calls.append(1) or kernels)
    return calls


@pytest.mark.filterwarnings("ignore:`torch.jit.script:FutureWarning")  # torch's forward-AD decompositions
def test_inference_runs_the_kernels_and_autograd_the_torch_ops(kernel_calls):
    calls = kernel_calls
    module, labels, image = prior(), random_labels([4], 8, 8, "dense", 0), torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        module(image, {"masks": labels})
    assert len(calls) == 1
    out = module(image, {"masks": labels}).channels  # autograd: the torch ops, differentiable
    assert len(calls) == 1 and out.requires_grad
    with torch.inference_mode():
        module.train()(image, {"masks": labels})  # training mode without autograd (validation): the kernels
    assert len(calls) == 2
    module.pre_seg.requires_grad_(False)  # fine-tuning pre_seg_in alone still needs autograd
    assert module(image, {"masks": labels}).channels.requires_grad and len(calls) == 2
    with torch.no_grad(), forward_ad.dual_level():  # forward-mode AD: the ops carry the tangent
        dual = forward_ad.make_dual(image, torch.ones_like(image))
        assert forward_ad.unpack_dual(module(dual, {"masks": labels}).channels).tangent is not None
    with torch.no_grad(), pytest.raises(RuntimeError):  # a float64 image for float32 weights: refused as by conv2d
        module(image.double(), {"masks": labels})
    assert len(calls) == 2


class Traced(torch.nn.Module):
    def __init__(self, module: MaskAveragePooling) -> None:
        super().__init__()
        self.module = module

    def forward(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.module(image, {"masks": labels}).channels


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.trace:FutureWarning")
def test_tracing_records_the_torch_ops_not_the_kernels(kernel_calls):
    calls = kernel_calls
    labels, image = random_labels([4], 8, 8, "dense", 0), torch.rand(1, 3, 8, 8)
    module = Traced(prior().requires_grad_(False))
    with torch.no_grad():
        traced = torch.jit.trace(module, (image, labels), check_trace=False)
        assert calls == []
        torch.testing.assert_close(traced(image, labels), module(image, labels))  # ops vs kernels: rounding
    assert calls == [1]  # the eager call


@pytest.mark.parametrize("numba", ["not installed", "broken"])
def test_without_numba_map_pools_with_torch_ops(monkeypatch, numba):
    """numba is an optional extra: not installed, MAP quietly runs torch ops; installed but broken, it warns."""
    package = sys.modules["deblurstack.plugins.sam_deblur"]
    if numba == "not installed":
        monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ModuleNotFoundError
    else:
        monkeypatch.setitem(sys.modules, "numba", types.ModuleType("numba"))  # `from numba import njit` fails
    monkeypatch.delitem(sys.modules, "deblurstack.plugins.sam_deblur.kernels")
    monkeypatch.delattr(package, "kernels")
    pooling.load_kernels.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert pooling.load_kernels() is None
        told = [str(w.message) for w in caught if "numba kernels unavailable" in str(w.message)]
        assert len(told) == (0 if numba == "not installed" else 1), told
        labels, image, module = random_labels([4], 8, 8, "dense", 0), torch.rand(1, 3, 8, 8), prior()
        with torch.no_grad():
            torch.testing.assert_close(
                module(image, {"masks": labels}).channels, definition(module.project(image), labels)
            )
    finally:
        pooling.load_kernels.cache_clear()


def test_a_channels_last_image_gives_the_same_output():
    labels, image = random_labels([5, 3], 9, 11, "dense", 2), torch.rand(2, 3, 9, 11)
    module = prior()
    for path in PATHS:
        expected = pooled(module, image, labels, path)
        out = pooled(module, image.to(memory_format=torch.channels_last), labels, path)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)  # oneDNN rounds channels_last differently


@pytest.mark.parametrize("size", [(1, 1), (1, 6), (5, 1), (2, 2), (9, 17), (4, 70), (13, 45)])
@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_and_sum_is_the_convolution_summed_per_group(size, channels, dtype):
    # random ids change below almost everywhere (width 45 and 70: long stretches, the vectorised convolution);
    # blocks of 3 x 11 change every third row where two blocks differ (stretches of 11 to 70 columns)
    generator = torch.Generator().manual_seed(sum(size) + channels)
    image = torch.rand(2, 3, *size, generator=generator, dtype=dtype)
    weight = torch.randn(channels, 3, 3, 3, generator=generator, dtype=dtype)
    bias = torch.randn(channels, generator=generator, dtype=dtype)
    height, width = size
    blocks = torch.randint(0, 5, (2, -(-height // 3), -(-width // 11)), generator=generator)
    for ids in (
        torch.randint(0, 5, (2, *size), generator=generator),
        blocks.repeat_interleave(3, 1).repeat_interleave(11, 2)[:, :height, :width],
    ):
        sums, counts, narrow = kernels.project_and_sum(image, ids, weight, bias, groups=5)
        groups = counts.shape[1]  # 5, or 8 where the ids' bitwise OR is 7 (3 | 4, say): groups 5 to 7 stay empty
        features = F.conv2d(image.double(), weight.double(), bias.double(), padding=1).flatten(2)
        expected = torch.zeros(2, channels, groups, dtype=torch.float64)
        expected.scatter_add_(2, ids.flatten(1)[:, None].expand(-1, channels, -1), features)
        torch.testing.assert_close(sums, expected, rtol=1e-12, atol=1e-12)  # float64 prefix sums: no float32 step
        assert groups in (5, 8) and torch.equal(
            counts, torch.stack([sample.flatten().bincount(minlength=groups) for sample in ids])
        )
        assert narrow.dtype == torch.uint8 and torch.equal(narrow.long(), ids)
        table = torch.rand(2, channels, groups, dtype=dtype, generator=generator)
        assert torch.equal(kernels.broadcast(table, narrow), pooling.broadcast(table, ids))


@pytest.mark.parametrize("segment", ["felzenszwalb", "slic", "noise"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_map_on_a_real_photo_and_its_segmentations_equals_the_definition(segment, dtype):
    # regions with irregular boundaries (runs of every length, both ways of summing them), and per-pixel noise
    from skimage import data, segmentation

    photo = data.astronaut()[::4, ::4]  # 128 x 128 x 3 uint8
    if segment == "felzenszwalb":
        labels = segmentation.felzenszwalb(photo, scale=100, sigma=0.8, min_size=20)
    elif segment == "slic":
        labels = segmentation.slic(photo, n_segments=60, start_label=0)
    else:
        labels = torch.randint(0, 50, photo.shape[:2], generator=torch.Generator().manual_seed(0)).numpy()
    labels = torch.from_numpy(labels.astype("int64"))[None]
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].to(dtype) / 255
    module = prior(seg_channels=2).to(dtype)
    with torch.no_grad():
        expected = definition(module.project(image), labels)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(pooled(module, image, labels, "kernels"), expected, rtol=tolerance, atol=tolerance / 10)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_project_and_sum_declines_an_image_with_a_nan_or_inf_pixel(value):
    # through the column sums it would reach every group below it: MAP pools such an image with torch ops instead
    image, ids = torch.rand(2, 3, 6, 40), torch.randint(0, 4, (2, 6, 40))
    assert isinstance(kernels.project_and_sum(image, ids, torch.rand(2, 3, 3, 3), torch.rand(2)), tuple)
    image[1, 2, 3, 17] = value
    declined = kernels.project_and_sum(image, ids, torch.rand(2, 3, 3, 3), torch.rand(2))
    assert declined is kernels.Declined.NOT_FINITE


def test_map_tries_the_kernels_once_on_an_image_with_a_nan_pixel_and_twice_on_labels_it_must_compact(monkeypatch):
    calls, project_and_sum = [], kernels.project_and_sum

    def counted(*args):
        calls.append(project_and_sum(*args))
        return calls[-1]

    monkeypatch.setattr(kernels, "project_and_sum", counted)
    image, labels = torch.rand(1, 3, 6, 8), torch.randint(0, 4, (1, 6, 8))
    image[0, 1, 2, 3] = float("nan")
    assert pooled(prior(), image, labels, "kernels")[0, :, 2, 3].isnan().all()
    assert calls == [kernels.Declined.NOT_FINITE]  # the compacted ids would not make the pixel finite
    calls.clear()
    out = pooled(prior(), image.nan_to_num(), labels - 1, "kernels")  # a negative label
    assert calls[0] is kernels.Declined.WIDE_IDS and isinstance(calls[1], tuple) and out.isfinite().all()


@pytest.mark.parametrize(
    ("top", "groups", "dtype"), [(255, 256, torch.uint8), (256, 512, torch.int16), (40000, 65536, torch.int32)]
)
def test_the_tables_grow_with_the_labels_and_the_broadcast_reads_the_narrowest_ids(top, groups, dtype):
    # labels as they are, largest last: the tables grow to a power of two above them as the rows come
    labels = torch.zeros(1, 200, 400, dtype=torch.long)
    labels[0, -1, -3:] = torch.tensor([1, top // 2, top])
    sums, counts, narrow = kernels.project_and_sum(
        torch.rand(1, 3, 200, 400), labels, torch.rand(2, 3, 3, 3), torch.rand(2)
    )
    assert sums.shape == (1, 2, groups) and counts.shape == (1, groups) and counts[0, top] == 1
    assert narrow.dtype == dtype and torch.equal(narrow.long(), labels)


@pytest.mark.parametrize("labels", [[[[0, 3, -1]]], [[[0, 1, 7]]]])
def test_project_and_sum_declines_negative_labels_and_labels_wider_than_the_image(labels):
    # a 1 x 3 image holds labels up to 2 as they are (bitwise OR up to 3); group_ids compacts the others
    labels = torch.tensor(labels)
    declined = kernels.project_and_sum(torch.rand(1, 3, 1, 3), labels, torch.rand(2, 3, 3, 3), torch.rand(2))
    assert declined is kernels.Declined.WIDE_IDS
    compact, groups = group_ids(labels)
    summed = kernels.project_and_sum(torch.rand(1, 3, 1, 3), compact, torch.rand(2, 3, 3, 3), torch.rand(2), groups)
    assert isinstance(summed, tuple)


def test_nan_and_inf_pixels_reach_their_group_alike_on_both_paths():
    image = torch.rand(1, 3, 6, 7)
    image[0, 0, 1, 1], image[0, 2, 4, 5] = float("nan"), float("inf")
    labels = torch.zeros(1, 6, 7, dtype=torch.long)
    labels[:, 3:] = 1
    labels[:, 0, 6] = 2  # a group of one pixel, away from both
    outputs = [pooled(prior(), image, labels, path) for path in PATHS]
    assert outputs[0][0][:, labels[0] == 0].isnan().all() and outputs[0][:, :, 0, 6].isfinite().all()
    assert torch.equal(outputs[0].isnan(), outputs[1].isnan()) and torch.equal(outputs[0].isinf(), outputs[1].isinf())
