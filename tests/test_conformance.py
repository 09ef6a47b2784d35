"""The plugin testing kit: built-in components pass it, and it catches broken ones."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from deblurstack import (
    Backbone,
    BackboneRecord,
    LossRecord,
    MetricRecord,
    PriorOutput,
    PriorRecord,
    SynthesizerRecord,
    TrainerRecord,
    hookimpl,
    image_residual,
)
from deblurstack.params import read_signature
from deblurstack.registry import PluginManager
from deblurstack.testing import check_component

CHECKED_KINDS = (
    "backbone",
    "prior",
    "translator",
    "discriminator",
    "loss",
    "metric",
    "mask_source",
    "synthesizer",
    "trainer",
)
#: parameters a component needs to be built at all (components that need files are checked with files below)
REQUIRED = {"trainer:supervised": {"iterations": 1}, "trainer:kernel_wizard": {"iterations": 1}}
#: components that read weight files nobody can download here (their loading code has tests of its own)
NEEDS_WEIGHTS = {"metric:lpips"}


def _builtin_cases():
    manager = PluginManager()
    manager.load_entrypoints(distributions={"deblurstack"})
    for kind in CHECKED_KINDS:
        for name, component in manager.components(kind).items():
            if f"{kind}:{name}" in NEEDS_WEIGHTS:
                continue
            params = REQUIRED.get(f"{kind}:{name}", {})
            injected = {"insertion_points"} if kind == "prior" and component.record.guidance else set()
            needs = [p for p in read_signature(component.load_factory()).parameters.values() if p.required]
            needs = [p for p in needs if p.name not in injected]  # the builder passes these
            if any(p.name not in params for p in needs):
                continue  # needs files (a SAM checkpoint, a mask folder): not buildable from defaults
            yield kind, name, params
            for preset in component.record.presets:
                yield kind, f"{name}.{preset}", params


BUILTIN = list(_builtin_cases())


def test_there_are_builtin_components_of_every_kind_to_check():
    assert {kind for kind, _, _ in BUILTIN} == set(CHECKED_KINDS)


@pytest.mark.parametrize("kind, name, params", BUILTIN, ids=[f"{k}:{n}" for k, n, _ in BUILTIN])
def test_builtin_components_pass_the_conformance_checks(builtin_plugin_manager, kind, name, params):
    check_component(kind, name, params)


def test_builtin_datasets_pass_the_conformance_checks(builtin_plugin_manager, tmp_path):
    for folder in ("input", "target"):
        (tmp_path / folder).mkdir()
        for index in range(2):
            image = np.random.default_rng(index).integers(0, 255, (30, 41, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / folder / f"{index}.png"), image)
    folders = {"input_dir": str(tmp_path / "input"), "target_dir": str(tmp_path / "target")}
    check_component("dataset", "paired_folder", {**folders, "patch_size": 16, "augment": True})


def test_the_testing_kit_imports_without_pytest():
    code = "import sys; sys.modules['pytest'] = None; from deblurstack.testing import check_component"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- broken components are caught


class NoPadding(Backbone):
    """Forgets to pad: a 2x2 max-pool and upsample lose a row on odd sizes."""

    pad_multiple = 2

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 3, padding=1)

    def forward(self, image, guidance=None):
        x = nn.functional.max_pool2d(self.conv(image), 2)
        return nn.functional.interpolate(x, scale_factor=2.0) + image[:, :3, : x.shape[2] * 2, : x.shape[3] * 2]


class IgnoresExtraChannels(Backbone):
    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, image, guidance=None):
        return image_residual(self.conv(image[:, :3]), image)


class Noisy(Backbone):
    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 3, padding=1)

    def forward(self, image, guidance=None):
        noise = 0.01 * torch.randn(image.shape[0], 3, *image.shape[-2:]) if not self.training else 0
        return image_residual(self.conv(image), image) + noise


class UnsavedScale(Backbone):
    """Keeps a random tensor outside the state_dict, so a round trip changes the output."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 3, padding=1)
        self.scale = torch.rand(1)

    def forward(self, image, guidance=None):
        return image_residual(self.conv(image) * self.scale, image)


class NanGradient(Backbone):
    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 3, padding=1)

    def forward(self, image, guidance=None):
        return image_residual(torch.sqrt(self.conv(image) - 10.0).nan_to_num(0.0), image)


class SkipsGuidance(Backbone):
    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 3, padding=1)
        self.insertion_points = {"decoder_s1": 3}

    def forward(self, image, guidance=None):
        return image_residual(self.conv(image), image)


class NeverPads(Backbone):
    """Downsamples twice without padding, so odd sizes fail inside forward."""

    pad_multiple = 4

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, 8, 4, stride=4)
        self.up = nn.ConvTranspose2d(8, 3, 4, stride=4)

    def forward(self, image, guidance=None):
        return image_residual(self.up(self.down(image)), image)


class NoInChannels(Backbone):
    """Takes only the image, but its record keeps the default extra_channels=True."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, image, guidance=None):
        return image_residual(self.conv(image), image)


class NoResidual(Backbone):
    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 3, padding=1)

    def forward(self, image, guidance=None):
        return self.conv(image)


class ResidualFromPriors(Backbone):
    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 3, padding=1)

    def forward(self, image, guidance=None):
        return self.conv(image) + image[:, -3:]


class WrongChannels(nn.Module):
    out_channels = 2

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 1)

    def forward(self, image, aux):
        return PriorOutput(channels=self.conv(image))


class RewardsNoise(nn.Module):
    def forward(self, prediction, target):
        return -(prediction - target).abs().mean()


class TakesWeight(nn.Module):
    """A loss whose own parameter is named like the reserved ``weight`` option (the term's factor)."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, prediction, target):
        return self.weight * (prediction - target).abs().mean()


class Unlabelled(nn.Module):
    """A metric without a protocol."""

    def forward(self, output, target):
        return -(output - target).abs().flatten(1).mean(1)


class Backwards(nn.Module):
    protocol = "mean absolute error, but the record says higher is better"

    def forward(self, output, target):
        return (output - target).abs().flatten(1).mean(1)


class Identity:
    """A synthesizer that forgets to blur."""

    def __call__(self, frames, rng):
        return {"input": frames[0], "target": frames[0]}


class Untyped:
    def __init__(self, iterations):
        self.iterations = iterations

    def fit(self, job):
        pass


class NoModel:
    """Trains a network of its own (its record says so), but cannot build it."""

    def __init__(self, iterations: int) -> None:
        self.iterations = iterations

    def fit(self, job) -> None:
        pass


class Broken:
    @hookimpl
    def deblurstack_backbones(self):
        return [
            BackboneRecord(name=name, factory=factory, summary="broken on purpose", insertion_points=points)
            for name, factory, points in [
                ("never_pads", NeverPads, ()),
                ("no_in_channels", NoInChannels, ()),
                ("no_residual", NoResidual, ()),
                ("residual_from_priors", ResidualFromPriors, ()),
                ("no_padding", NoPadding, ()),
                ("ignores_extra", IgnoresExtraChannels, ()),
                ("noisy", Noisy, ()),
                ("unsaved_scale", UnsavedScale, ()),
                ("nan_gradient", NanGradient, ()),
                ("skips_guidance", SkipsGuidance, ("decoder_s1",)),
                ("undeclared_point", SkipsGuidance, ()),
            ]
        ]

    @hookimpl
    def deblurstack_priors(self):
        return [PriorRecord(name="wrong_channels", factory=WrongChannels, summary="s", out_channels="channels")]

    @hookimpl
    def deblurstack_losses(self):
        return [
            LossRecord(name="rewards_noise", factory=RewardsNoise, summary="s"),
            LossRecord(name="takes_weight", factory=TakesWeight, summary="s"),
        ]

    @hookimpl
    def deblurstack_metrics(self):
        return [
            MetricRecord(name="unlabelled", factory=Unlabelled, summary="s"),
            MetricRecord(name="backwards", factory=Backwards, summary="s"),
        ]

    @hookimpl
    def deblurstack_synthesizers(self):
        return [SynthesizerRecord(name="identity", factory=Identity, summary="s")]

    @hookimpl
    def deblurstack_trainers(self):
        return [
            TrainerRecord(name="untyped", factory=Untyped, summary="s"),
            TrainerRecord(name="no_model", factory=NoModel, summary="s", trains_stack=False),
        ]


@pytest.mark.parametrize(
    "kind, name, message",
    [
        ("backbone", "no_padding", r"output \(2, 3, 16, 20\) for input \(2, 3, 17, 21\)"),
        ("backbone", "ignores_extra", "ignores the extra input channels"),
        ("backbone", "noisy", "two builds under seed 1234 differ"),
        ("backbone", "unsaved_scale", "state_dict round trip changes the output"),
        ("backbone", "nan_gradient", "has non-finite gradients"),
        (
            "backbone",
            "skips_guidance",
            r"guidance was applied at \{\} \(point: channels\), expected \{'decoder_s1': 3\}",
        ),
        ("backbone", "undeclared_point", r"insertion points \['decoder_s1'\] are not all declared in its record \[\]"),
        ("backbone", "never_pads", "fails on a 17x21 input \\(pad_multiple=4\\): a backbone takes any size"),
        ("backbone", "no_residual", "has no global residual on the image channels"),
        ("backbone", "no_in_channels", r"its record says extra_channels \(the default\), so its factory must take"),
        ("loss", "takes_weight", "its factory's parameter weight is named like a reserved option of loss nodes"),
        ("backbone", "residual_from_priors", "takes its global residual from the prior channels"),
        ("metric", "unlabelled", "needs a one-line protocol"),
        ("metric", "backwards", "'backwards' rates a perfect output .* but the record says higher is better"),
        ("synthesizer", "identity", "the blurry image equals the sharp one"),
        ("trainer", "untyped", "parameters without a type hint escape the config check: iterations"),
        ("trainer", "no_model", r"says trains_stack=False but has no build_model\(\) making its network"),
        ("prior", "wrong_channels", "out_channels is 2, the record declares 3"),
        ("loss", "rewards_noise", "a noisy prediction scores .*, not above the perfect"),
    ],
)
def test_the_checks_catch_broken_components(plugin_manager, register_plugin, kind, name, message):
    register_plugin(Broken(), name="broken")
    with pytest.raises(AssertionError, match=f"^{name}: {message}"):
        check_component(kind, name, {"iterations": 1} if kind == "trainer" else None)


@pytest.mark.usefixtures("test_components")
@pytest.mark.parametrize(
    "kind, name, params",
    [
        ("prior", "label_mean", {"channels": 3}),
        ("prior", "spatial_gate", {"points": ["decoder_s1", "decoder_s4"]}),
        ("translator", "color_shift", None),
        ("loss", "multiscale_l1", None),
    ],
)
def test_the_checks_pass_for_working_priors_translators_and_losses(kind, name, params):
    check_component(kind, name, params)
