"""Blur2Blur's PatchGAN discriminator and losses against the official definitions (VinAIResearch/Blur2Blur).

``tests/data/official/patchgan_{instance,batch}_keys.json`` are the state-dict keys and shapes of the official
``NLayerDiscriminator(3, 64, 3, norm_layer=get_norm_layer(norm))`` (``models/networks.py``).
``patchgan_reference.pt`` was made by the official code with the weights :func:`official_weights` makes for those
keys (and, for the VGG loss, for the ``features.*`` keys of torchvision's ``vgg16``) and the inputs :func:`rand`
draws below:

* ``instance_real``/``instance_fake``: the instance-norm discriminator on the three-scale pyramids (x0.25, x0.5,
  x1 by ``F.interpolate(..., mode="bilinear")``) of ``rand(1, 2, 3, 128, 128)`` and ``rand(2, ...)``;
  ``batch_eval``/``batch_train``: the batch-norm one on the first pyramid in eval and in train mode, and
  ``batch_running_mean_3`` its ``model.3.running_mean`` after that train-mode forward;
* ``hinge_d``: ``(GANLoss("hinge")(pred_fake, False) + GANLoss("hinge")(pred_real, True)) * 0.5`` and ``hinge_g``:
  ``GANLoss("hinge")(pred_fake, True, dis_update=False)`` on those logits;
* ``gp_values``: ``cal_gradient_penalty(netD, real, fake, lambda_gp=1e-4)`` (``models/losses/__init__.py``) at
  batch 1 for each of the four samples of ``rand(3, 4, 3, 64, 64)`` / ``rand(4, ...)``, with the alphas the
  official code drew (``gp_alpha``); ``gp_value_weight1`` the first with ``lambda_gp=1``;
* ``init_{norm}``: the first 16 values of every parameter of ``define_D(3, 64, "basic", 3, norm, "normal", 0.02)``
  built right after ``torch.manual_seed(0)``;
* ``vgg_per_scale``/``vgg_total``: the official ``VGGLoss`` (``models/losses/vgg_loss.py``) between
  ``rand(6, 2, 3, 16, 16)``, ``rand(7, 2, 3, 32, 32)``, ``rand(8, 2, 3, 64, 64)`` and the pyramid of
  ``rand(5, 2, 3, 64, 64)``, as ``backward_G`` computes ``perc1 + perc2 + perc3``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from deblurstack import build_stack
from deblurstack.checkpoint import load_state
from deblurstack.errors import CheckpointError
from deblurstack.plugins.blur2blur.discriminator import PatchGAN
from deblurstack.plugins.blur2blur.losses import (
    VGG16Perceptual,
    discriminator_loss,
    downsample_pyramid,
    generator_loss,
    gradient_penalty,
)
from tests.official_weights import official_weights

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
REFERENCE = torch.load(OFFICIAL / "patchgan_reference.pt", weights_only=True)


def rand(seed: int, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def official_keys(norm: str) -> dict[str, list[int]]:
    return json.loads((OFFICIAL / f"patchgan_{norm}_keys.json").read_text())


def official_discriminator(norm: str) -> PatchGAN:
    discriminator = PatchGAN(norm=norm)
    discriminator.load_state_dict(official_weights(official_keys(norm)), strict=True)
    return discriminator


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = 1e-5) -> None:
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= tolerance * max(1.0, float(theirs.abs().max()))


# ------------------------------------------------------------------------------------------------ PatchGAN


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_patchgan_has_the_official_keys_and_shapes(norm):
    ours = {key: list(value.shape) for key, value in PatchGAN(norm=norm).state_dict().items()}
    assert ours == official_keys(norm)
    assert ("model.2.bias" in ours) == (norm == "instance")  # with batch norm the convs before it have no bias


def test_patchgan_gives_the_official_outputs_with_instance_norm():
    discriminator = official_discriminator("instance")
    real, fake = downsample_pyramid(rand(1, 2, 3, 128, 128), 3), downsample_pyramid(rand(2, 2, 3, 128, 128), 3)
    with torch.no_grad():
        for images, reference in ((real, REFERENCE["instance_real"]), (fake, REFERENCE["instance_fake"])):
            outputs = discriminator(images)
            assert len(outputs) == 3
            for output, expected in zip(outputs, reference, strict=True):
                assert_close(output, expected)


def test_patchgan_gives_the_official_outputs_with_batch_norm_in_eval_and_train_mode():
    discriminator = official_discriminator("batch")
    real = downsample_pyramid(rand(1, 2, 3, 128, 128), 3)
    with torch.no_grad():
        for output, expected in zip(discriminator.eval()(real), REFERENCE["batch_eval"], strict=True):
            assert_close(output, expected)
        for output, expected in zip(discriminator.train()(real), REFERENCE["batch_train"], strict=True):
            assert_close(output, expected)
    assert_close(discriminator.model[3].running_mean, REFERENCE["batch_running_mean_3"])


def test_patchgan_logit_maps_are_30_14_6_for_256_128_64_inputs():
    with torch.device("meta"):
        discriminator = PatchGAN()
        sizes = [tuple(o.shape) for o in discriminator([torch.empty(2, 3, s, s) for s in (64, 128, 256)])]
    assert sizes == [(2, 1, 6, 6), (2, 1, 14, 14), (2, 1, 30, 30)]
    assert discriminator.scales == 3


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_normal_init_draws_what_the_official_define_d_draws(norm):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ours = dict(PatchGAN(norm=norm).named_parameters())
    expected = REFERENCE[f"init_{norm}"]
    assert ours.keys() == expected.keys()
    for key, values in expected.items():
        assert torch.equal(ours[key].detach().flatten()[:16], values), key
    conv, last = ours["model.0.weight"].detach(), ours["model.11.bias"].detach()
    assert abs(float(conv.std()) - 0.02) < 2e-3 and float(last.abs().max()) == 0
    if norm == "batch":
        assert (
            abs(float(ours["model.3.weight"].detach().mean()) - 1) < 0.01
            and float(ours["model.3.bias"].detach().abs().max()) == 0
        )


def test_default_init_keeps_pytorch_s_initialisation():
    with torch.random.fork_rng():
        torch.manual_seed(3)
        first = PatchGAN(init="default").model[0].weight
        torch.manual_seed(3)
        plain = torch.nn.Conv2d(3, 64, 4, stride=2, padding=1).weight
    assert torch.equal(first, plain)


def test_patchgan_takes_one_tensor_as_one_scale_and_checks_its_inputs():
    discriminator = PatchGAN(ndf=8, scales=2)
    image = rand(0, 3, 3, 64, 64)
    (single,) = discriminator(image)  # judged whole, not split along the batch as the official forward does
    assert single.shape == (3, 1, 6, 6)
    per_sample = torch.cat([discriminator(image[b : b + 1])[0] for b in range(3)])
    assert torch.allclose(single, per_sample, atol=1e-6)  # instance norm: the samples do not interact
    assert [o.shape[-1] for o in discriminator([image[..., :32, :32], image])] == [2, 6]
    with pytest.raises(ValueError, match="list of 3"):
        discriminator([image] * 3)
    with pytest.raises(ValueError, match="B x C x H x W"):
        discriminator([image[0], image[0]])


# ------------------------------------------------------------------------------------------------ GAN losses

A = torch.tensor([[[[-2.0, 0.5], [1.0, 3.0]]]])
B = torch.tensor([[[[0.0]]]])
C = torch.tensor([[[[-1.0, 0.0], [2.0, -3.0]]]])
D = torch.tensor([[[[0.5]]]])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_hinge_losses_by_hand():
    # real: relu(1 - x): A -> (3 + 0.5 + 0 + 0) / 4, B -> 1; fake: relu(1 + x): C -> (0 + 1 + 3 + 0) / 4, D -> 1.5
    real, fake = (0.875 + 1.0) / 2, (1.0 + 1.5) / 2
    assert float(discriminator_loss([A, B], [C, D], "hinge")) == pytest.approx(0.5 * (real + fake))
    assert float(generator_loss([A, B], "hinge")) == pytest.approx((-0.625 + 0.0) / 2)  # -mean(x) per scale


def test_lsgan_losses_by_hand():
    real = ((9 + 0.25 + 0 + 4) / 4 + 1) / 2  # mean((x - 1)^2)
    fake = ((1 + 0 + 4 + 9) / 4 + 0.25) / 2  # mean(x^2)
    assert float(discriminator_loss([A, B], [C, D], "lsgan")) == pytest.approx(0.5 * (real + fake))
    assert float(generator_loss([A, B], "lsgan")) == pytest.approx(real)


def test_vanilla_losses_by_hand():
    def mean(values):
        return sum(values) / len(values)

    # BCE with logits: -log(sigmoid(x)) = softplus(-x) for real, softplus(x) for fake
    real = (mean([softplus(-x) for x in (-2, 0.5, 1, 3)]) + softplus(0)) / 2
    fake = (mean([softplus(x) for x in (-1, 0, 2, -3)]) + softplus(0.5)) / 2
    assert float(discriminator_loss([A, B], [C, D], "vanilla")) == pytest.approx(0.5 * (real + fake))
    assert float(generator_loss([A, B], "vanilla")) == pytest.approx(real)


def test_gan_losses_take_a_tensor_as_one_scale_and_refuse_bad_input():
    batch = torch.cat([A, -A])  # 2 x 1 x 2 x 2: one scale, not two
    assert float(generator_loss(batch, "hinge")) == pytest.approx(0.0)
    assert float(discriminator_loss(batch, batch, "lsgan")) == pytest.approx(
        0.5 * (F.mse_loss(batch, 1 + 0 * batch) + (batch**2).mean())
    )
    with pytest.raises(ValueError, match="2 real logit maps but 1"):
        discriminator_loss([A, B], [C], "hinge")
    with pytest.raises(ValueError, match="unknown GAN mode"):
        generator_loss([A], "wgan")


def test_hinge_losses_equal_the_official_ganloss_on_the_official_logits():
    real, fake = REFERENCE["instance_real"], REFERENCE["instance_fake"]
    assert_close(discriminator_loss(real, fake, "hinge"), REFERENCE["hinge_d"])
    assert_close(generator_loss(fake, "hinge"), REFERENCE["hinge_g"])


# ------------------------------------------------------------------------------------------------ gradient penalty


def test_gradient_penalty_equals_the_official_one_at_batch_1_and_their_mean_at_batch_4():
    discriminator = official_discriminator("instance")
    reals, fakes, alpha = rand(3, 4, 3, 64, 64), rand(4, 4, 3, 64, 64), REFERENCE["gp_alpha"]
    expected = REFERENCE["gp_values"]
    assert_close(gradient_penalty(discriminator, reals[:1], fakes[:1], alpha[:1], 1.0), REFERENCE["gp_value_weight1"])
    singles = torch.stack(
        [gradient_penalty(discriminator, reals[b : b + 1], fakes[b : b + 1], alpha[b : b + 1]) for b in range(4)]
    )
    assert_close(singles.detach(), expected)
    batched = gradient_penalty(discriminator, reals, fakes, alpha)
    assert_close(batched.detach(), expected.mean())
    batched.backward()  # differentiable for the discriminator's step (create_graph)
    assert discriminator.model[0].weight.grad is not None and discriminator.model[0].weight.grad.abs().sum() > 0


def test_gradient_penalty_detaches_its_inputs_and_checks_shapes():
    discriminator = PatchGAN(ndf=4)
    real, fake = rand(0, 2, 3, 32, 32).requires_grad_(True), rand(1, 2, 3, 32, 32).requires_grad_(True)
    gradient_penalty(discriminator, real, fake, torch.full((2, 1, 1, 1), 0.3)).backward()
    assert real.grad is None and fake.grad is None
    assert float(gradient_penalty(discriminator, real, fake, torch.ones(2, 1, 1, 1), weight=0.0)) == 0.0
    with pytest.raises(ValueError, match="alpha"):
        gradient_penalty(discriminator, real, fake, torch.ones(2, 1))
    with pytest.raises(ValueError, match="one shape"):
        gradient_penalty(discriminator, real, fake[:1], torch.ones(2, 1, 1, 1))


# ------------------------------------------------------------------------------------------------ VGG16 perceptual


def vgg_feature_keys() -> dict[str, list[int]]:
    with torch.device("meta"):
        state = torchvision.models.vgg16().state_dict()
    return {key: list(value.shape) for key, value in state.items() if key.startswith("features.")}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """Torchvision-style VGG16 weights (official_weights over the ``features.*`` keys), up to conv5_1 plus extras."""
    keys = vgg_feature_keys()
    up_to_conv5_1 = dict(list(keys.items())[: list(keys).index("features.24.bias") + 1])
    state = official_weights(up_to_conv5_1)  # key i is seeded with i: the same values as over every key
    state["features.26.weight"] = torch.zeros(1)  # deeper layers and the classifier are not read
    state["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return path


def test_vgg16_perceptual_equals_the_official_vgg_loss(vgg_file):
    loss = VGG16Perceptual(weights=str(vgg_file))
    target = rand(5, 2, 3, 64, 64)
    prediction = [rand(6, 2, 3, 16, 16), rand(7, 2, 3, 32, 32), rand(8, 2, 3, 64, 64)]
    assert_close(loss(prediction, target), REFERENCE["vgg_total"])
    assert_close(loss(prediction[2], target), REFERENCE["vgg_per_scale"][2])
    assert_close(
        loss.distance(prediction[0], F.interpolate(target, scale_factor=0.25, mode="bilinear")),
        REFERENCE["vgg_per_scale"][0],
    )


def test_vgg16_features_are_post_relu_except_conv5_1_as_the_official_in_place_slices_give(vgg_file):
    loss = VGG16Perceptual(weights=str(vgg_file))
    torchvision_features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    file = {k.removeprefix("features."): v for k, v in torch.load(vgg_file, weights_only=True).items()}
    torchvision_features[:25].load_state_dict(
        {k: v for k, v in file.items() if k.split(".")[0].isdigit() and int(k.split(".")[0]) < 25}
    )
    image = rand(9, 1, 3, 32, 32)
    with torch.no_grad():
        ours = loss.feature_maps(image)
        explicit = [F.relu(torchvision_features[: k + 1](image)) for k in (7, 14, 17, 21)]
        explicit.append(torchvision_features[:25](image))  # conv5_1 before its ReLU
    for mine, theirs in zip(ours, explicit, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)


def test_vgg16_perceptual_is_frozen_in_eval_and_gives_no_gradient_to_the_target(vgg_file):
    loss = VGG16Perceptual(weights=str(vgg_file)).train()
    assert not loss.features.training and not any(p.requires_grad for p in loss.parameters())
    prediction, target = rand(0, 1, 3, 32, 32).requires_grad_(True), rand(1, 1, 3, 32, 32).requires_grad_(True)
    loss(prediction, target).backward()
    assert target.grad is None and prediction.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_vgg16_perceptual_has_torchvision_s_keys_and_checks_its_parameters():
    with pytest.warns(UserWarning, match="meaningless"):
        loss = VGG16Perceptual()
    keys = vgg_feature_keys()
    assert {k: list(v.shape) for k, v in loss.named_parameters()} == {
        k: v for k, v in keys.items() if int(k.split(".")[1]) <= 24
    }
    with pytest.warns(UserWarning):
        again = VGG16Perceptual()
    pairs = zip(loss.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)  # the random init is seeded
    with pytest.raises(ValueError, match="layer_weights"):
        VGG16Perceptual(layers=(3, 8), layer_weights=(1.0,))
    with pytest.raises(ValueError, match="strictly increasing"):
        VGG16Perceptual(layers=(8, 3), layer_weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="halve"):
        loss([rand(0, 1, 3, 16, 16), rand(0, 1, 3, 20, 20)], rand(1, 1, 3, 40, 40))


def test_the_vgg_moves_with_the_stack_but_is_not_in_its_checkpoints(vgg_file):
    node = {
        "stack": {
            "backbone": {"type": "mimo_unet", "num_res": 1},
            "losses": [{"type": "vgg16_perceptual", "weights": str(vgg_file)}],
        }
    }
    stack = build_stack(node)
    assert not [key for key in stack.state_dict() if key.startswith("losses.")]  # 40 MB saved per copy
    loss = next(iter(stack.losses.values())).loss
    assert len(list(loss.parameters())) == 22 and not any(p.requires_grad for p in loss.parameters())  # 11 convs
    prediction, target = rand(0, 1, 3, 32, 32), rand(1, 1, 3, 32, 32)
    expected = loss(prediction, target)
    again = build_stack(node)
    load_state(again, stack.state_dict(), source="checkpoint")  # strict: nothing missing
    assert torch.equal(next(iter(again.losses.values())).loss(prediction, target), expected)
    # a checkpoint saved before the VGG was left out of it still loads
    features = loss.features.state_dict()
    older = {**stack.state_dict(), **{f"losses.vgg16_perceptual.loss.features.{k}": v for k, v in features.items()}}
    load_state(again, older, source="older checkpoint")
    with pytest.raises(CheckpointError, match="unexpected keys: losses.other.weight"):  # only hidden keys are dropped
        load_state(again, {**stack.state_dict(), "losses.other.weight": torch.zeros(1)}, source="another stack's")


def test_vgg16_weights_that_are_not_plain_tensors_or_lack_a_layer_are_refused(tmp_path, vgg_file):
    state = torch.load(vgg_file, weights_only=True)
    pickled = tmp_path / "pickled.pth"
    torch.save({**state, "options": argparse.Namespace(lr=1e-4)}, pickled)
    with pytest.raises(CheckpointError, match="refused"):
        VGG16Perceptual(weights=str(pickled))
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        VGG16Perceptual(weights=str(text))
    incomplete = tmp_path / "incomplete.pth"
    torch.save({k: v for k, v in state.items() if k != "features.24.weight"}, incomplete)
    with pytest.raises(CheckpointError, match="features.24.weight"):
        VGG16Perceptual(weights=str(incomplete))


def test_downsample_pyramid_is_the_official_interpolate():
    image = rand(0, 1, 3, 66, 70)
    coarse, middle, fine = downsample_pyramid(image, 3)
    assert torch.equal(coarse, F.interpolate(image, scale_factor=0.25, mode="bilinear"))
    assert torch.equal(middle, F.interpolate(image, scale_factor=0.5, mode="bilinear"))
    assert fine is image and coarse.shape[-2:] == (16, 17)
