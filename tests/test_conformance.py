"""The plugin testing kit: built-in components pass it, and it catches broken ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deblurstack import Backbone, BackboneRecord, LossRecord, PriorOutput, PriorRecord, hookimpl, image_residual
from deblurstack.registry import PluginManager
from deblurstack.testing import check_component

CHECKED_KINDS = ("backbone", "prior", "translator", "loss")


def _builtin_cases():
    manager = PluginManager()
    manager.load_entrypoints(distributions={"deblurstack"})
    for kind in CHECKED_KINDS:
        for name, component in manager.components(kind).items():
            yield kind, name
            for preset in component.record.presets:
                yield kind, f"{name}.{preset}"


BUILTIN = list(_builtin_cases())


def test_there_are_builtin_components_to_check():
    kinds = {kind for kind, _ in BUILTIN}
    assert {"backbone", "loss"} <= kinds


@pytest.mark.parametrize("kind, name", BUILTIN, ids=[f"{k}:{n}" for k, n in BUILTIN])
def test_builtin_components_pass_the_conformance_checks(builtin_plugin_manager, kind, name):
    check_component(kind, name)


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


class Broken:
    @hookimpl
    def deblurstack_backbones(self):
        return [
            BackboneRecord(name=name, factory=factory, summary="broken on purpose", insertion_points=points)
            for name, factory, points in [
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
        return [LossRecord(name="rewards_noise", factory=RewardsNoise, summary="s")]


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
        ("prior", "wrong_channels", "out_channels is 2, the record declares 3"),
        ("loss", "rewards_noise", "a noisy prediction scores .*, not above the perfect"),
    ],
)
def test_the_checks_catch_broken_components(plugin_manager, register_plugin, kind, name, message):
    register_plugin(Broken(), name="broken")
    with pytest.raises(AssertionError, match=f"^{name}: {message}"):
        check_component(kind, name)


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
