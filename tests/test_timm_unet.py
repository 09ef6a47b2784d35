"""timm encoders as U-Net backbones: pretrained weights from a local file, prior channels, errors."""

from __future__ import annotations

import pytest
import timm
import torch

from deblurstack import ConfigError, build_stack, save_atomic


def test_pretrained_encoder_weights_come_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    pretrained = timm.create_model("resnet18", pretrained=False)  # stands in for downloaded ImageNet weights
    save_atomic(pretrained.state_dict(), tmp_path / "resnet18.pth")
    stack = build_stack(
        {"stack": {"backbone": {"type": "timm_unet", "encoder_weights": str(tmp_path / "resnet18.pth")}}}
    )
    encoder = stack.backbone.encoder.state_dict()
    expected = pretrained.state_dict()
    assert encoder.keys() <= expected.keys() and {"fc.weight", "fc.bias"} == expected.keys() - encoder.keys()
    assert all(torch.equal(encoder[k], expected[k]) for k in encoder)


@pytest.mark.usefixtures("test_components")
def test_prior_channels_start_with_zero_weight_on_a_pretrained_encoder(tmp_path):
    pretrained = timm.create_model("resnet18", pretrained=False)
    save_atomic(pretrained.state_dict(), tmp_path / "resnet18.pth")
    config = {
        "stack": {
            "priors": [{"type": "label_mean", "channels": 2}],
            "backbone": {"type": "timm_unet", "encoder_weights": str(tmp_path / "resnet18.pth")},
        }
    }
    stem = build_stack(config).backbone.encoder.conv1.weight
    assert stem.shape[1] == 5
    assert torch.equal(stem[:, :3], pretrained.conv1.weight) and not stem[:, 3:].any()


def test_a_missing_weights_file_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(ConfigError) as caught:  # refused by the config check, before timm builds anything
        build_stack({"stack": {"backbone": {"type": "timm_unet", "encoder_weights": str(missing)}}})
    assert caught.value.problems == [f"<dict>: stack.backbone.encoder_weights: no such file: {missing}"]


def test_an_encoder_timm_does_not_know_is_refused_with_a_suggestion():
    expected = r"stack.backbone.encoder: timm has no model 'resnet181'; did you mean 'resnet18'\?"
    with pytest.raises(ConfigError, match=expected):
        build_stack({"stack": {"backbone": {"type": "timm_unet", "encoder": "resnet181"}}})


def test_the_decoder_reaches_full_resolution_with_a_guidance_point_per_stage():
    backbone = build_stack({"stack": {"backbone": {"type": "timm_unet.convnext_nano"}}}).backbone
    assert backbone.pad_multiple == 32
    assert list(backbone.insertion_points) == ["decoder_s16", "decoder_s8", "decoder_s4", "decoder_s2", "decoder_s1"]
    seen = {}

    def record(point):
        def apply(features):
            seen[point] = features.shape[1]
            return features

        return apply

    with torch.no_grad():
        out = backbone.eval()(torch.rand(1, 3, 70, 90), guidance={p: record(p) for p in backbone.insertion_points})
    assert out.shape == (1, 3, 70, 90) and seen == backbone.insertion_points
