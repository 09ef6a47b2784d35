"""The quickstart's blur families: defocus and Gaussian lens blur, frame averaging of a simulated camera
sweep, and the mixture of synthesizers with sensor noise (fast tests only)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from deblurstack import ConfigError
from deblurstack.compose import resolve_node
from deblurstack.plugins.synthesis.lens import Defocus, GaussianBlur, disc_kernel, gaussian_kernel
from deblurstack.plugins.synthesis.mixed import Mixed
from deblurstack.plugins.synthesis.sweep import CameraSweep, sweep_warps
from deblurstack.registry import get_plugin_manager
from deblurstack.testing import check_component

NEW = {"defocus": Defocus, "gaussian_blur": GaussianBlur, "camera_sweep": CameraSweep, "mixed": Mixed}


def texture(height: int = 48, width: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(height, width, 3)).astype(np.float32) ** 2


def build(node: dict) -> object:
    return resolve_node("synthesizer", node, "blur").build()


@pytest.mark.parametrize("name", sorted(NEW))
def test_registered_typed_documented_and_conformant(name):
    record = get_plugin_manager().get("synthesizer", name).record
    assert record.load_factory() is NEW[name] and record.frames == 1
    doc = inspect.getdoc(NEW[name])
    for parameter, info in inspect.signature(NEW[name]).parameters.items():
        assert info.annotation is not inspect.Parameter.empty and info.default is not inspect.Parameter.empty
        assert f"\n    {parameter}: " in doc.split("Args:")[1], f"{parameter} is not documented"
    check_component("synthesizer", name)


@pytest.mark.parametrize("radius", [0.0, 0.7, 1.0, 2.5, 4.0, 7.3])
def test_disc_kernel_sums_to_one_is_symmetric_and_round(radius):
    kernel = disc_kernel(radius)
    side = kernel.shape[0]
    assert kernel.shape == (side, side) and side % 2 == 1 and np.isclose(kernel.sum(), 1.0)
    assert np.allclose(kernel, kernel.T) and np.allclose(kernel, kernel[::-1, ::-1])
    if radius >= 1:  # the area it covers is that of the disc (within the anti-aliased edge)
        area = (kernel > 0).sum()
        assert np.pi * (radius - 1) ** 2 <= area <= np.pi * (radius + 1) ** 2
        assert kernel[side // 2, side // 2] == kernel.max()


def test_gaussian_kernel_has_the_asked_std():
    kernel = gaussian_kernel(2.0)
    axis = np.arange(kernel.shape[0]) - kernel.shape[0] // 2
    assert np.isclose(kernel.sum(), 1.0)
    assert np.isclose(np.sqrt((kernel.sum(axis=0) * axis**2).sum()), 2.0, atol=0.02)
    assert gaussian_kernel(0.0).shape == (1, 1)


def test_lens_blurs_remove_detail_keep_brightness_and_are_seeded():
    sharp = texture()
    for synthesizer in (Defocus(min_radius=2.0, max_radius=3.0), GaussianBlur(min_sigma=1.0, max_sigma=2.0)):
        made = synthesizer([sharp], np.random.default_rng(1))
        assert made["target"] is not None and np.array_equal(made["target"], sharp)
        assert np.abs(np.diff(made["input"], axis=1)).mean() < 0.5 * np.abs(np.diff(sharp, axis=1)).mean()
        linear = float((made["input"].astype(np.float64) ** 2.2).mean())  # blurred in linear space: its mean is kept
        assert np.isclose(linear, float((sharp.astype(np.float64) ** 2.2).mean()), rtol=0.02)
        again = synthesizer([sharp], np.random.default_rng(1))
        assert np.array_equal(made["input"], again["input"])
    assert np.allclose(
        Defocus(min_radius=0.0, max_radius=0.0)([sharp], np.random.default_rng(0))["input"], sharp, atol=1e-5
    )


def test_sweep_middle_warp_is_the_identity_and_frames_follow_the_shift():
    warps = sweep_warps(np.random.default_rng(0), 40, 50, frames=7, shift=12.0, max_rotation=0, max_zoom=0, curvature=0)
    assert len(warps) == 7 and np.allclose(warps[3], [[1, 0, 0], [0, 1, 0]])
    ends = np.linalg.norm(warps[-1][:, 2] - warps[0][:, 2])
    assert np.isclose(ends, 12.0)  # a straight pan: the first and last frames are the shift apart


def test_sweep_of_a_constant_image_stays_constant_and_a_zero_shift_is_sharp():
    flat = np.full((30, 40, 3), 0.4, np.float32)
    made = CameraSweep()([flat], np.random.default_rng(2))
    assert np.allclose(made["input"], 0.4, atol=1e-4)
    still = CameraSweep(min_shift=0.0, max_shift=0.0, max_rotation=0.0, max_zoom=0.0)
    assert np.allclose(still([texture()], np.random.default_rng(0))["input"], texture(), atol=1e-5)


def test_mixed_draws_each_component_by_weight_and_leaves_a_share_sharp():
    mixed = build(
        {
            "type": "mixed",
            "components": [{"type": "motion_blur", "max_length": 8.0}, {"type": "defocus"}],
            "weights": [3, 1],
            "sharp_probability": 0.2,
        }
    )
    choices = [mixed.choose(np.random.default_rng([5, i])) for i in range(2000)]
    share = {c: choices.count(c) / len(choices) for c in (None, 0, 1)}
    assert abs(share[None] - 0.2) < 0.04 and abs(share[0] - 0.6) < 0.05 and abs(share[1] - 0.2) < 0.04
    sharp = texture()
    index = choices.index(None)
    made = mixed([sharp], np.random.default_rng([5, index]))
    assert np.array_equal(made["input"], sharp)  # no noise configured: the sharp pair is exact
    index = choices.index(1)
    made = mixed([sharp], np.random.default_rng([5, index]))
    alone = Defocus()([sharp], _after_choice(mixed, [5, index]))
    assert np.array_equal(made["input"], alone["input"])  # the chosen component draws from the same generator


def _after_choice(mixed: Mixed, seed: list[int]) -> np.random.Generator:
    rng = np.random.default_rng(seed)
    mixed.choose(rng)
    return rng


def test_mixed_noise_has_the_drawn_strength_and_is_seeded():
    flat = np.full((64, 64, 3), 0.5, np.float32)
    gaussian = Mixed(components=({"type": "defocus"},), noise_sigma=(0.02, 0.02))
    made = gaussian([flat], np.random.default_rng(0))
    assert np.isclose(float(made["input"].std()), 0.02, rtol=0.1)
    shot = Mixed(components=({"type": "defocus"},), photons=(100.0, 100.0))
    noisy = shot([flat], np.random.default_rng(0))["input"]
    # Poisson on 0.5 ** 2.2 * 100 photons, seen through the camera response: std about 0.05 at mid-grey
    assert 0.03 < float(noisy.std()) < 0.08 and noisy.dtype == np.float32
    assert np.array_equal(noisy, shot([flat], np.random.default_rng(0))["input"])


def test_mixed_checks_its_children_with_their_place_in_the_list():
    problems = {
        "type: unknown synthesizer 'motion_blurr'": {"components": [{"type": "motion_blurr"}]},
        "components.1: kernel_size: must be odd, got 4": {
            "components": [{"type": "defocus"}, {"type": "motion_blur", "kernel_size": 4}]
        },
        "takes 3 frames; a mixture of blurs takes one image": {"components": [{"type": "frame_average", "frames": 3}]},
        "3 weights for 2 components": {"weights": [1, 2, 3]},
        "noise_sigma must be a range": {"noise_sigma": [0.1, 0.0]},
        "components.0: synthesizer 'motion_blur' could not be built": {
            "components": [{"type": "motion_blur", "max_length": 40.0}]
        },
    }
    for expected, params in problems.items():
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(")):
            resolve_node("synthesizer", {"type": "mixed", **params}, "vars.blur", source="q.yaml").build()


def test_mixed_varies_the_colours_of_the_target_and_the_input_alike():
    sharp = texture()
    sharp_only = ({"type": "defocus", "min_radius": 0.0, "max_radius": 0.0},)
    mixed = Mixed(components=sharp_only, shuffle_channels=True, tint=0.3)
    orders = set()
    for seed in range(40):
        made = mixed([sharp], np.random.default_rng(seed))
        target = made["target"]
        order = []
        for c in range(3):
            ratios = [target[..., c] / sharp[..., k].clip(1e-3) for k in range(3)]
            order.append(int(np.argmin([np.abs(r - np.median(r)).mean() for r in ratios])))
        assert sorted(order) == [0, 1, 2]
        gains = [float(np.median(target[..., c] / sharp[..., k].clip(1e-3))) for c, k in enumerate(order)]
        assert all(0.7 - 1e-3 <= g <= 1.0 + 1e-3 for g in gains)
        assert np.allclose(made["input"], target, atol=1e-4)  # radius 0, no noise: the input is the varied target
        orders.add(tuple(order))
    assert len(orders) == 6
