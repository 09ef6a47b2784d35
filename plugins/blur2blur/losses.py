"""Blur2Blur's losses: the multi-scale GAN objectives, the gradient penalty and the VGG16 perceptual loss.

Official definitions (VinAIResearch/Blur2Blur: ``models/blur2blur_model.py``, ``models/losses/gan_loss.py``,
``models/losses/vgg_loss.py``, ``models/losses/__init__.py``), with ``D`` the PatchGAN applied to the three
scales ``s`` of the translator's output (1/4, 1/2, 1) and of the real (known-blur) image::

    L_D = 0.5 * (mean_s l_fake(D(fake_s)) + mean_s l_real(D(real_s))) + GP(real_1, fake_1)
    L_G = mean_s l_gen(D(fake_s)) + 0.8 * sum_s P(fake_s, input_s)

where ``fake`` is detached for ``L_D``, ``input`` is the translator's blurry input and the coarse scales of
``real`` and ``input`` are ``F.interpolate(x, scale_factor=0.25 or 0.5, mode="bilinear")`` (align_corners False,
no antialiasing): :func:`downsample_pyramid`. The 0.8 (``--lambda_Perc``) is the loss node's weight, not part of
:class:`VGG16Perceptual`; the GP weight is 1e-4 (``--lambda_gp``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from deblurstack import Loss
from deblurstack.checkpoint import load_state, read_state_dict
from deblurstack.params import ExistingFile

__all__ = [
    "GANMode",
    "VGG16Perceptual",
    "discriminator_loss",
    "downsample_pyramid",
    "generator_loss",
    "gradient_penalty",
]

#: the GAN objectives: ``hinge`` (Blur2Blur's default ``--gan_mode``), ``vanilla`` (BCE on logits), ``lsgan`` (MSE)
GANMode = Literal["hinge", "vanilla", "lsgan"]


def downsample_pyramid(image: Tensor, scales: int) -> list[Tensor]:
    """``image`` at ``scales`` sizes, coarse to fine: ``x 2^-(scales-1), ..., x 0.5, x 1``.

    The official downsampling of the real images for the discriminator and of the input for the perceptual term:
    ``F.interpolate(image, scale_factor=f, mode="bilinear")``; the finest scale is ``image`` itself.
    """
    if scales < 1:
        raise ValueError(f"scales must be at least 1, got {scales}")
    return [
        F.interpolate(image, scale_factor=0.5**k, mode="bilinear") if k else image for k in range(scales - 1, -1, -1)
    ]


def _logit_list(logits: Tensor | Sequence[Tensor], what: str) -> list[Tensor]:
    """A list of per-scale logit maps; a single tensor is one scale (never split along its batch)."""
    maps = [logits] if isinstance(logits, Tensor) else list(logits)
    if not maps or not all(isinstance(m, Tensor) for m in maps):
        raise ValueError(f"{what}: expected a tensor or a non-empty sequence of tensors (one logit map per scale)")
    return maps


def _check_mode(mode: str) -> None:
    if mode not in ("hinge", "vanilla", "lsgan"):
        raise ValueError(f"unknown GAN mode {mode!r}: expected 'hinge', 'vanilla' or 'lsgan'")


def _discriminator_term(logits: Tensor, real: bool, mode: str) -> Tensor:
    """One scale's discriminator loss (mean over batch and positions)."""
    if mode == "hinge":  # official: -mean(min(x - 1, 0)) for real, -mean(min(-x - 1, 0)) for fake
        return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()
    target = torch.full_like(logits, 1.0 if real else 0.0)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.mse_loss(logits, target)


def _generator_term(logits: Tensor, mode: str) -> Tensor:
    """One scale's generator loss (mean over batch and positions)."""
    if mode == "hinge":
        return -logits.mean()
    return _discriminator_term(logits, True, mode)


def discriminator_loss(real: Tensor | Sequence[Tensor], fake: Tensor | Sequence[Tensor], mode: GANMode) -> Tensor:
    """``0.5 * (L_fake + L_real)``: each the per-scale loss averaged over the scales.

    ``real``/``fake`` are the discriminator's logit maps (one per scale, coarse to fine, or one tensor) for the real
    images and the (detached) translated ones. Each scale's loss is a mean over batch and positions, the scales are
    then averaged with equal weight (official ``GANLoss.forward``: ``torch.mean(torch.stack(losses))``), and
    ``loss_D = (loss_D_fake + loss_D_real) * 0.5``; the gradient penalty (:func:`gradient_penalty`) is added to this
    by the caller. Per scale, with ``x`` the logits:

    * ``hinge``: real ``mean(relu(1 - x))``, fake ``mean(relu(1 + x))`` (the official fused ``-mean(min(x - 1,
      0))`` and ``-mean(min(-x - 1, 0))``);
    * ``vanilla``: ``BCEWithLogits(x, 1)`` and ``BCEWithLogits(x, 0)``, means;
    * ``lsgan``: ``mean((x - 1)^2)`` and ``mean(x^2)``.

    ``vanilla`` and ``lsgan`` are the pix2pix definitions (the official ``networks.GANLossBase``, the names the
    ``--gan_mode`` help lists). Blur2Blur's own ``GANLoss`` accepts neither name: its ``non_saturated`` is the same
    BCE and its ``least_square`` is ``0.5 x`` this MSE, but both fail for real targets there (its
    ``get_target_tensor`` returns None for them), so only ``hinge`` (the default) and ``wasserstein`` ever ran.
    """
    _check_mode(mode)
    real_maps, fake_maps = _logit_list(real, "real"), _logit_list(fake, "fake")
    if len(real_maps) != len(fake_maps):
        raise ValueError(f"{len(real_maps)} real logit maps but {len(fake_maps)} fake ones")
    loss_real = torch.stack([_discriminator_term(x, True, mode) for x in real_maps]).mean()
    loss_fake = torch.stack([_discriminator_term(x, False, mode) for x in fake_maps]).mean()
    return (loss_fake + loss_real) * 0.5


def generator_loss(fake: Tensor | Sequence[Tensor], mode: GANMode) -> Tensor:
    """The translator's adversarial loss on the discriminator's logits for its outputs, averaged over the scales.

    Per scale: ``hinge``: ``-mean(x)``; ``vanilla``: ``BCEWithLogits(x, 1)``; ``lsgan``: ``mean((x - 1)^2)``
    (the official ``GANLoss(iters, pred_fake, True, dis_update=False)``).
    """
    _check_mode(mode)
    return torch.stack([_generator_term(x, mode) for x in _logit_list(fake, "fake")]).mean()


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor | Sequence[Tensor]],
    real: Tensor,
    fake: Tensor,
    alpha: Tensor,
    weight: float = 1e-4,
) -> Tensor:
    """WGAN-GP: ``weight * mean_b((||grad_x sum D(x)_b||_2 - 1)^2)`` at ``x = alpha real + (1 - alpha) fake``.

    ``real``/``fake`` are ``B x C x H x W`` full-resolution images (Blur2Blur penalises the finest scale only);
    both are detached, so the penalty trains the discriminator alone. ``alpha`` (``B x 1 x 1 x 1``, U(0, 1)) is drawn
    by the caller from its own generator. The gradient of the sum of every logit the discriminator returns for
    ``x`` is taken with ``create_graph=True`` (the penalty is differentiated for the discriminator's step); each
    sample's norm is over its C, H and W, after adding 1e-16 to every gradient element as officially.

    The official ``cal_gradient_penalty`` (``models/losses/__init__.py``, ``type="mixed"``, constant 1) is this at
    batch 1 only: its discriminator iterates over a plain tensor, so it judges the samples one by one as unbatched
    images and returns a list, while its ``grad_outputs`` has one entry; a batch > 1 fails there (and with batch
    norm even batch 1 fails: ``BatchNorm2d`` refuses the unbatched sample). Here the batch is judged at once: with
    instance norm (or none) each sample's gradient depends on that sample alone, so the result is exactly the mean
    of the per-sample official values; with batch norm in training mode the batch statistics couple the samples and
    each "per-sample" gradient also carries the other samples' influence (in eval mode they are independent again).
    A batch-norm discriminator's running statistics are updated by this forward too.
    """
    if real.shape != fake.shape or real.dim() != 4:
        raise ValueError(
            f"real and fake must be B x C x H x W of one shape, got {tuple(real.shape)}, {tuple(fake.shape)}"
        )
    if alpha.shape != (real.shape[0], 1, 1, 1):
        raise ValueError(f"alpha must be {real.shape[0]} x 1 x 1 x 1, got {tuple(alpha.shape)}")
    if weight == 0:
        return real.new_zeros(())
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).detach().requires_grad_(True)
    logits = discriminator(mixed)
    maps = [logits] if isinstance(logits, Tensor) else list(logits)
    total = torch.stack([m.sum() for m in maps]).sum()
    (gradients,) = torch.autograd.grad(total, mixed, create_graph=True)
    norms = (gradients.flatten(1) + 1e-16).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean() * weight


#: torchvision's VGG16 ``features``: (out channels of each conv), "M" a 2x2 max-pool; a ReLU follows every conv
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

VGGLayer = Annotated[int, Field(ge=0, le=30)]
LayerWeight = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


def _vgg16_features(depth: int) -> nn.Sequential:
    """The first ``depth`` modules of ``torchvision.models.vgg16().features``, same indices and types."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
    return nn.Sequential(*layers[:depth])


def _without_features(module: nn.Module, state: dict[str, Tensor], prefix: str, metadata: Any) -> None:
    """``state_dict`` post-hook: drop the VGG's weights (constants from a file) from the dict."""
    for key in [k for k in state if k.startswith(f"{prefix}features.")]:
        del state[key]


class VGG16Perceptual(Loss):
    """Blur2Blur's perceptual loss: ``sum_i w_i * L1(phi_i(prediction), phi_i(target))``, frozen VGG16 features.

    ``phi_i`` are torchvision VGG16 ``features`` at indices ``layers`` (7, 14, 17, 21, 24: conv2_2, conv3_3,
    conv4_1, conv4_3, conv5_1), weighted 1/32, 1/16, 1/8, 1/4, 1; L1 is a mean; target features carry no gradient;
    images go in as they are ([0, 1] RGB, no ImageNet normalisation). The official ``VGG16`` cuts ``features``
    into slices ending at those indices, and torchvision's ReLUs are in place: each slice after the first starts
    with the ReLU that follows the previous slice's last conv, which rectifies the stored feature in place. So a
    feature is taken *after* the ReLU when the module after its index is a ReLU and it is not the last layer:
    with the defaults the first four are post-ReLU and conv5_1 is pre-ReLU. This class reproduces that.

    A coarse-to-fine list of predictions is compared scale by scale with the target downsampled as Blur2Blur does
    for its reconstruction term (:func:`downsample_pyramid`: ``F.interpolate(target, scale_factor=0.25 / 0.5,
    mode="bilinear")``), and the scales are summed with equal weight (official ``perc1 + perc2 + perc3``, before
    the 0.8 of ``--lambda_Perc``); a single tensor is compared with the target.

    The VGG is frozen (``requires_grad`` False), always in eval mode, and left out of ``state_dict()`` (so out of
    the stack's checkpoints: ``weights`` is read again when the stack is built). Nothing is downloaded.

    Args:
        weights: torchvision's ImageNet ``vgg16-397923af.pth`` (a state dict with ``features.N.*`` keys), read with
            ``weights_only=True``; only the conv layers up to ``max(layers)`` are read, and each of them must be
            there with the right shape (the rest of the file is ignored). None: a randomly initialised VGG (seeded,
            so reproducible); the loss is then meaningless, for tests only, and a warning says so.
        layers: strictly increasing indices into VGG16 ``features`` (0 .. 30).
        layer_weights: one weight per layer.
    """

    def __init__(
        self,
        weights: ExistingFile | None = None,
        layers: tuple[VGGLayer, ...] = (7, 14, 17, 21, 24),
        layer_weights: tuple[LayerWeight, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0),
    ) -> None:
        super().__init__()
        layers, layer_weights = tuple(int(k) for k in layers), tuple(float(w) for w in layer_weights)
        if not layers:
            raise ValueError("layers must name at least one VGG16 feature index")
        if len(layer_weights) != len(layers):
            raise ValueError(f"{len(layers)} layers but {len(layer_weights)} layer_weights")
        if any(b <= a for a, b in zip(layers, layers[1:], strict=False)) or not 0 <= layers[0] <= layers[-1] <= 30:
            raise ValueError(f"layers must be strictly increasing indices in 0 .. 30, got {layers}")
        self.layers, self.layer_weights = layers, layer_weights
        self.features = _vgg16_features(layers[-1] + 1)
        if weights is None:
            warnings.warn(
                "VGG16Perceptual: no weights file, so the VGG16 is randomly initialised and the loss is meaningless "
                "(for tests only); pass weights=PATH to torchvision's vgg16-397923af.pth",
                stacklevel=2,
            )
            self._random_init()
        else:
            self._load(weights)
        self.features.requires_grad_(False)
        # constants read from `weights` again whenever the stack is built: the stack's checkpoints need not carry
        # them (40 MB, twice with EMA). Frozen parameters, not buffers, because DDP broadcasts buffers every step
        self.register_state_dict_post_hook(_without_features)
        self.features.eval()

    def _random_init(self) -> None:
        """torchvision's VGG init (Kaiming normal, fan out, and zero biases), from a fixed seed."""
        generator = torch.Generator().manual_seed(0)
        for module in self.features:
            if isinstance(module, nn.Conv2d) and module.weight.device.type != "meta":
                with torch.no_grad():
                    module.weight.copy_(
                        nn.init.kaiming_normal_(
                            torch.empty(module.weight.shape), mode="fan_out", nonlinearity="relu", generator=generator
                        )
                    )
                    module.bias.zero_()

    def _load(self, path: str) -> None:
        """The conv weights this loss uses from a torchvision VGG16 state dict; every one of them must be there."""
        state = read_state_dict(path)
        wanted = {f"features.{key}" for key in self.features.state_dict()}
        # missing or misshapen keys are reported by load_state; the classifier and deeper layers are not read
        load_state(self, {key: value for key, value in state.items() if key in wanted}, source=str(path))

    def train(self, mode: bool = True) -> VGG16Perceptual:
        super().train(mode)
        self.features.eval()  # a frozen feature extractor: never in training mode
        return self

    def feature_maps(self, image: Tensor) -> list[Tensor]:
        """The features at ``layers`` of ``B x 3 x H x W`` images, as the official in-place VGG16 slices give them."""
        maps: list[Tensor] = []
        wanted = set(self.layers)
        x = image
        for index, module in enumerate(self.features):
            x = module(x)
            if index - 1 in wanted and isinstance(module, nn.ReLU):
                maps[-1] = x  # the official next slice's leading in-place ReLU rectifies the stored feature
            if index in wanted:
                maps.append(x)
        return maps

    def distance(self, prediction: Tensor, target: Tensor) -> Tensor:
        """``sum_i w_i * mean|phi_i(prediction) - phi_i(target)|`` at one scale."""
        with torch.no_grad():
            target_maps = self.feature_maps(target)
        loss = prediction.new_zeros(())
        for weight, ours, theirs in zip(self.layer_weights, self.feature_maps(prediction), target_maps, strict=True):
            loss = loss + weight * F.l1_loss(ours, theirs)
        return loss

    def forward(self, prediction: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        outputs = [prediction] if isinstance(prediction, Tensor) else list(prediction)
        if not outputs:
            raise ValueError("VGG16Perceptual: no prediction given")
        total = target.new_zeros(())
        for k, (out, label) in enumerate(zip(outputs, downsample_pyramid(target, len(outputs)), strict=True)):
            if out.shape != label.shape:
                raise ValueError(
                    f"output {k} of {len(outputs)} is {tuple(out.shape)}, but the target at that scale is "
                    f"{tuple(label.shape)} (outputs must halve in size from the last, coarse to fine)"
                )
            total = total + self.distance(out, label)
        return total
