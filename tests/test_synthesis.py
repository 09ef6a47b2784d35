"""Blur synthesizers: random-trajectory motion blur and frame averaging, both in linear space."""

from __future__ import annotations

import inspect

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage import data

from deblurstack import ConfigError
from deblurstack.compose import resolve_node
from deblurstack.plugins.synthesis.frame_average import FrameAverage
from deblurstack.plugins.synthesis.motion_blur import (
    MotionBlur,
    apply_kernel,
    random_trajectory,
    trajectory_kernel,
)
from deblurstack.registry import get_plugin_manager


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def texture(size: int = 64, seed: int = 0) -> np.ndarray:
    """A high-contrast random RGB image in [0, 1]."""
    return rng(seed).uniform(size=(size, size, 3)).astype(np.float32) ** 3


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def gradient_energy(image: np.ndarray) -> float:
    image = image.astype(np.float64)
    return float((np.diff(image, axis=0) ** 2).sum() + (np.diff(image, axis=1) ** 2).sum())


def photo(name: str) -> np.ndarray:
    """A bundled real photo, shorter side 128 px, float32 RGB in [0, 1]."""
    image = getattr(data, name)()
    scale = 128 / min(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255


PHOTOS = ["astronaut", "chelsea", "coffee", "rocket"]  # camera is gray


# ---------------------------------------------------------------- registry


def test_both_synthesizers_are_registered_with_their_frame_counts():
    manager = get_plugin_manager()
    motion = manager.get("synthesizer", "motion_blur").record
    average = manager.get("synthesizer", "frame_average").record
    assert motion.load_factory() is MotionBlur and motion.frames == 1
    assert average.load_factory() is FrameAverage and average.frames == "frames"
    assert inspect.signature(FrameAverage).parameters["frames"].default == 7
    assert motion.reference and average.reference


@pytest.mark.parametrize("factory", [MotionBlur, FrameAverage])
def test_every_parameter_is_typed_defaulted_and_documented(factory):
    doc = inspect.getdoc(factory)
    for name, parameter in inspect.signature(factory).parameters.items():
        assert parameter.annotation is not inspect.Parameter.empty, name
        assert parameter.default is not inspect.Parameter.empty, name
        assert f"\n    {name}: " in doc.split("Args:")[1], f"{name} is not documented in Args:"


def test_a_registered_factory_makes_a_pair():
    factory = get_plugin_manager().get("synthesizer", "motion_blur").record.load_factory()
    sharp = texture(40)
    pair = factory(exposure=1.0)([sharp], rng())
    assert set(pair) == {"input", "target"}
    assert pair["input"].shape == sharp.shape and pair["input"].dtype == np.float32
    assert pair["input"].min() >= 0 and pair["input"].max() <= 1
    np.testing.assert_array_equal(pair["target"], sharp)


# ---------------------------------------------------------------- trajectories and kernels


@settings(max_examples=60, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    length=st.floats(0.5, 30.0),
    anxiety=st.sampled_from([0.0, 0.001, 0.005, 0.01, 0.1]),
    exposure=st.sampled_from([0.001, 0.1, 0.5, 1.0]),
)
def test_kernels_are_non_negative_sum_to_one_and_fit_the_canvas(seed, length, anxiety, exposure):
    synth = MotionBlur(kernel_size=31, max_length=length, iterations=500, exposure=exposure, anxiety=anxiety)
    kernel = synth.sample_kernel(rng(seed))
    assert kernel.shape == (31, 31)
    assert kernel.min() >= 0
    assert kernel.sum() == pytest.approx(1.0, abs=1e-9)
    rows, cols = np.nonzero(kernel)  # the support's bounding box is centred on the kernel centre
    assert rows.min() + rows.max() == pytest.approx(30, abs=1)
    assert cols.min() + cols.max() == pytest.approx(30, abs=1)


@pytest.mark.parametrize("anxiety", [0.0, 0.005, 0.05])
def test_a_trajectory_is_as_long_as_asked(anxiety):
    path = random_trajectory(rng(), length=15.0, iterations=1000, anxiety=anxiety)
    assert path.shape == (1000,) and path[0] == 0
    assert np.abs(np.diff(path)).sum() == pytest.approx(15.0)
    extent = max(np.ptp(path.real), np.ptp(path.imag))
    if anxiety == 0:  # no perturbation: a straight segment
        assert np.abs(path[-1]) == pytest.approx(15.0)
    else:
        assert extent < 15.0


def test_same_seed_same_kernel_different_seeds_differ():
    synth = MotionBlur()
    np.testing.assert_array_equal(synth.sample_kernel(rng(3)), synth.sample_kernel(rng(3)))
    kernels = [synth.sample_kernel(rng(seed)) for seed in range(5)]
    assert all(not np.array_equal(a, b) for i, a in enumerate(kernels) for b in kernels[i + 1 :])


def test_same_seed_same_image_different_seeds_differ():
    sharp = texture(48)
    synth = MotionBlur(exposure=1.0, noise_sigma=0.01)
    first, again, other = (synth([sharp], rng(seed))["input"] for seed in (7, 7, 8))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 1e-3


def test_a_horizontal_trajectory_gives_a_horizontal_segment_kernel():
    kernel = trajectory_kernel(np.linspace(0, 12, 241) + 0j, size=31)
    rows, cols = np.nonzero(kernel > 1e-12)
    assert set(rows) == {15}
    assert set(cols) == set(range(9, 22))  # 15 +- 6
    inner = kernel[15, 10:21]
    assert inner.max() / inner.min() < 1.1  # constant speed: evenly spread


def test_horizontal_blur_smears_a_vertical_edge_and_keeps_a_horizontal_one():
    kernel = trajectory_kernel(np.linspace(0, 12, 241) + 0j, size=31)
    vertical = np.zeros((40, 40, 3), np.float32)
    vertical[:, 20:] = 1
    horizontal = np.ascontiguousarray(vertical.transpose(1, 0, 2))
    np.testing.assert_allclose(apply_kernel(horizontal, kernel), horizontal, atol=1e-5)
    row = apply_kernel(vertical, kernel)[20, :, 0]
    in_between = np.count_nonzero((row > 0.01) & (row < 0.99))
    assert 10 <= in_between <= 13  # the edge is spread over the 12-px path


def test_the_blur_is_a_convolution_not_a_correlation():
    # an L-shaped path (right, then down): a point light must draw the kernel itself, not its mirror
    path = np.concatenate([np.linspace(0, 8, 81), 8 + 1j * np.linspace(0, 4, 41)[1:]])
    kernel = trajectory_kernel(path, size=15)
    point = np.zeros((41, 41, 3), np.float32)
    point[20, 20] = 1
    blurred = apply_kernel(point, kernel, gamma=1.0)
    np.testing.assert_allclose(blurred[13:28, 13:28, 1], kernel, atol=1e-6)


def test_apply_kernel_matches_a_direct_linear_space_convolution():
    sharp = texture(32)
    kernel = trajectory_kernel(random_trajectory(rng(5), length=9.0, anxiety=0.01), size=11)
    expected = np.stack(
        [ndimage.convolve(sharp[..., c].astype(np.float64) ** 2.2, kernel, mode="mirror") for c in range(3)], axis=-1
    ) ** (1 / 2.2)
    np.testing.assert_allclose(apply_kernel(sharp, kernel), expected, atol=1e-4)


def refusal(node: dict) -> str:
    """The one problem ``--type / --set`` (as ``deblurstack synth`` checks them) report for ``node``."""
    with pytest.raises(ConfigError) as caught:
        resolve_node("synthesizer", node, "--type / --set")
    (problem,) = caught.value.problems
    return problem


def test_settings_that_cannot_work_are_refused():
    assert "--type / --set.kernel_size: must be odd, got 30" in refusal({"type": "motion_blur", "kernel_size": 30})
    assert "--type / --set.exposure: input should be greater than 0 " in refusal({"type": "motion_blur", "exposure": 0})
    assert "--type / --set.noise_sigma: input should be greater than or equal to 0" in refusal(
        {"type": "motion_blur", "noise_sigma": -0.1}
    )
    with pytest.raises(ValueError, match="max_length"):  # a relation between two parameters: checked when built
        MotionBlur(kernel_size=31, max_length=40.0)
    with pytest.raises(ValueError, match="spans"):
        trajectory_kernel(np.array([0, 20 + 0j]), size=15)
    with pytest.raises(ValueError, match="1 frame"):
        MotionBlur()([texture(8), texture(8)], rng())


# ---------------------------------------------------------------- photometry


@pytest.mark.parametrize("value", [0.0, 0.2, 0.73, 1.0])
def test_a_constant_image_stays_constant(value):
    flat = np.full((50, 60, 3), value, np.float32)
    out = MotionBlur(exposure=1.0)([flat], rng(1))["input"]
    np.testing.assert_allclose(out, flat, atol=1e-5)


def test_the_blur_preserves_the_mean_in_linear_space():
    # a periodic image: over whole periods away from the borders, the blur moves no energy in or out
    tile = texture(24, seed=2)
    sharp = np.tile(tile, (6, 6, 1))
    interior = (slice(24, 120), slice(24, 120))  # 4 x 4 periods, farther than the kernel radius from the borders
    for seed in range(3):
        blurry = MotionBlur(exposure=1.0)([sharp], rng(seed))["input"]
        assert np.mean(blurry[interior] ** 2.2) == pytest.approx(np.mean(sharp[interior] ** 2.2), rel=1e-4)
        # highlights spread, so the display values brighten (blurring them directly would keep their mean)
        assert np.mean(blurry[interior]) > np.mean(sharp[interior]) + 0.05


@pytest.mark.parametrize("synth", [MotionBlur(noise_sigma=0.05), FrameAverage(frames=3, noise_sigma=0.05)])
def test_noise_has_the_requested_std(synth):
    flat = np.full((128, 128, 3), 0.5, np.float32)
    count = 1 if isinstance(synth, MotionBlur) else 3
    noisy = synth([flat] * count, rng(4))["input"]
    assert np.std(noisy) == pytest.approx(0.05, rel=0.03)
    assert np.mean(noisy) == pytest.approx(0.5, abs=2e-3)
    synth.noise_sigma = 0.0
    np.testing.assert_allclose(synth([flat] * count, rng(4))["input"], flat, atol=1e-6)


@pytest.mark.parametrize("name", PHOTOS)
def test_real_photos_lose_detail(name):
    sharp = photo(name)
    for seed in range(2):
        blurry = MotionBlur(exposure=1.0)([sharp], rng(seed))["input"]
        assert blurry.shape == sharp.shape
        assert 10 < psnr(blurry, sharp) < 40
        assert gradient_energy(blurry) < 0.8 * gradient_energy(sharp)


# ---------------------------------------------------------------- frame averaging


def test_identical_frames_average_to_the_frame():
    frame = texture(33)
    pair = FrameAverage(frames=5)([frame] * 5, rng())
    np.testing.assert_allclose(pair["input"], frame, atol=1e-5)


def test_the_target_is_the_middle_frame():
    frames = [np.full((8, 9, 3), i / 10, np.float32) for i in range(7)]
    pair = FrameAverage()(frames, rng())
    np.testing.assert_array_equal(pair["target"], frames[3])
    assert pair["input"].shape == (8, 9, 3) and pair["input"].dtype == np.float32


def test_a_moving_dot_leaves_a_streak_averaged_in_linear_space():
    frames = []
    for i in range(7):
        frame = np.zeros((21, 41, 3), np.float32)
        frame[10, 5 + 3 * i] = 1
        frames.append(frame)
    blurry = FrameAverage(frames=7)(frames, rng())["input"]
    lit = np.argwhere(blurry[..., 0] > 0)
    np.testing.assert_array_equal(lit, [[10, 5 + 3 * i] for i in range(7)])
    # each position holds the dot 1/7 of the time: g(1/7) = (1/7) ** (1/2.2), not 1/7
    np.testing.assert_allclose(blurry[10, 5::3][:7], (1 / 7) ** (1 / 2.2), rtol=1e-5)


def test_frames_moving_over_a_photo_blur_it():
    image = photo("coffee")
    frames = [np.ascontiguousarray(image[:, 2 * i : 2 * i + 150]) for i in range(9)]
    pair = FrameAverage(frames=9)(frames, rng())
    assert psnr(pair["input"], pair["target"]) < 40
    assert gradient_energy(pair["input"]) < 0.8 * gradient_energy(pair["target"])


def test_an_even_or_wrong_number_of_frames_is_refused():
    assert "--type / --set.frames: must be odd, got 6" in refusal({"type": "frame_average", "frames": 6})
    with pytest.raises(ValueError, match="7 frame"):
        FrameAverage()([texture(8)] * 6, rng())
    with pytest.raises(ValueError, match="differ in size"):
        FrameAverage(frames=3)([texture(8), texture(8), texture(9)], rng())
