"""KernelWizard: the encoded blur-kernel model that Blur2Blur uses to make its "known blur" real images.

Tran et al., CVPR 2021, "Explore Image Deblurring via Encoded Blur Kernel Space" (VinAIResearch/
blur-kernel-space-exploring, ``models/kernel_encoding/kernel_wizard.py``; Blur2Blur keeps a copy under
``models/explore/``). A shared feature extractor (stride 4) feeds two parts: the kernel extractor ``F(sharp,
blurry)`` encodes the blur of a pair as a ``kernel_dim x H/128 x W/128`` code map, and the adapter ``G(sharp,
code)``, a U-Net whose bottleneck takes the code, followed by a reconstruction trunk, puts that blur onto a
sharp image (a residual on it). Blur2Blur (``models/blur2blur_model.py::set_input``) encodes a known-domain pair
(sharp ``D``, blurry ``C``) and applies the code to the target camera's own sharp image, so the discriminator's
real images have known-domain blur but the target camera's colour and noise. Images are RGB in [0, 1] with no
normalisation (bkse divides by 255, Blur2Blur's loader applies ``ToTensor`` only). Image sides must be multiples
of 128; kernel extraction also needs them to be at least 256, since the reflect-padded blocks at the code map
need it at least 2 x 2 (the official code fails there with a padding error; the adapter takes 128).

Module names and their order follow the official code, parameter-free layers included (the ``none`` norm
layers are ``nn.Identity`` placeholders), so the released ``GOPRO_woVAE.pth`` (a plain state dict) loads with
``load_state_dict(strict=True)``. Deliberate differences from the official code, none of which changes the
result for the official configuration:

* the official in-place ``LeakyReLU`` at the start of each inner U-Net level also rewrites the tensor that
  level hands back as its skip connection; here the activation is explicit and not in place, with the same
  result (the skip carries the activated features);
* without the VAE the code is returned as it is: the official code adds ``0 * randn_like(code)``, which draws
  from torch's global generator; with the VAE the draw comes from this module's own generator
  (:class:`deblurstack.Stochastic`);
* the bottleneck transposed convolution takes ``8 * nf + kernel_dim`` channels (the official ``16 * nf``
  assumes ``kernel_dim == 8 * nf``, as in every released file);
* sizes that do not fit (see above), or a code map that does not fit the image, raise ``ValueError`` instead of
  failing inside a padding or a ``torch.cat``; nothing calls ``.cuda()``, so it also runs on the CPU;
* only the configuration of the released files is built (norms ``none``, reflect padding, no dropout): the
  official ``batch``/``instance`` norm, padding and dropout options are not offered.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import ConfigDict, Field
from torch import Tensor, nn
from typing_extensions import TypedDict  # pydantic needs this one, not typing's, before Python 3.12

from deblurstack import Stochastic

#: image sides must be multiples of this: 2 stride-2 convolutions, then 5 more in the extractor and the U-Net
MULTIPLE = 128
_EXTRACTOR_BLOCKS = 4  # GOPRO_woVAE's KernelExtractor.n_blocks
_RECON_CHANNELS = 64  # the official reconstruction trunk hard-codes 64 channels after its first upsampling


class ResidualBlockNoBN(nn.Module):
    """``x + conv3x3(relu(conv3x3(x)))`` with biases (the official ``ResidualBlock_noBN``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class ReflectResnetBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with reflection padding and no biases (the official ``ResnetBlock``, norm none)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.Identity(),  # norm "none"
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class KernelExtractor(nn.Module):
    """``F``: features of a sharp and a blurry image -> the code map (its mean and sigma halves with the VAE)."""

    def __init__(self, nf: int, out_channels: int, blocks: int) -> None:
        super().__init__()
        # the official norm "none" makes use_bias False, so no convolution here has a bias
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(2 * nf, nf, 7, bias=False),
            nn.Identity(),
            nn.ReLU(),
        ]
        for level in range(5):
            inner, outer = min(nf * 2**level, out_channels), min(nf * 2 ** (level + 1), out_channels)
            layers += [nn.Conv2d(inner, outer, 3, 2, 1, bias=False), nn.Identity(), nn.ReLU()]
        layers += [ReflectResnetBlock(out_channels) for _ in range(blocks)]
        self.model = nn.Sequential(*layers)

    def forward(self, sharp: Tensor, blurry: Tensor) -> Tensor:
        return self.model(torch.cat((sharp, blurry), dim=1))


class UnetLevel(nn.Module):
    """One level of the adapter U-Net (the official ``UnetSkipConnectionBlock`` with norm none)."""

    def __init__(
        self,
        outer: int,
        inner: int,
        submodule: UnetLevel | None = None,
        kernel_dim: int = 0,
        outermost: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        self.innermost = submodule is None
        down_conv = nn.Conv2d(outer, inner, 4, 2, 1, bias=False)  # no biases: the official norm "none" quirk
        # registered in the official order (down, submodule, up), which is the state dict's order
        if outermost:
            self.down = nn.Sequential(down_conv)
        elif self.innermost:
            self.down = nn.Sequential(nn.LeakyReLU(0.2), down_conv)
        else:
            self.down = nn.Sequential(nn.LeakyReLU(0.2), down_conv, nn.Identity())
        self.submodule = submodule  # None (innermost) registers nothing
        if outermost:
            self.up = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1), nn.Tanh())
        else:  # the innermost level's up-convolution also takes the code map
            up_in = inner + kernel_dim if self.innermost else 2 * inner
            self.up = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=False), nn.Identity())

    def forward(self, x: Tensor, kernel: Tensor) -> Tensor:
        if self.outermost:
            return self.up(self.submodule(self.down(x), kernel))
        x = self.down[0](x)  # the official activation is in place, so the skip connection carries the activated x
        inner = self.down[1:](x)
        inner = torch.cat((inner, kernel), dim=1) if self.innermost else self.submodule(inner, kernel)
        return torch.cat((self.up(inner), x), dim=1)


class KernelAdapter(nn.Module):
    """``G``'s U-Net: five levels (``nf`` to ``8 nf`` channels), the code map concatenated at the bottleneck."""

    def __init__(self, nf: int, kernel_dim: int) -> None:
        super().__init__()
        level = UnetLevel(8 * nf, 8 * nf, kernel_dim=kernel_dim)
        for outer, inner in ((4 * nf, 8 * nf), (2 * nf, 4 * nf), (nf, 2 * nf)):
            level = UnetLevel(outer, inner, level)
        self.model = UnetLevel(nf, nf, level, outermost=True)

    def forward(self, features: Tensor, kernel: Tensor) -> Tensor:
        return self.model(features, kernel)


class KernelWizardOptions(TypedDict, total=False):
    """A KernelWizard's shape as a config gives it (``network: {nf: 16, ...}``): :class:`KernelWizard`'s arguments,
    with the limits the config check holds them to; unset keys keep the ``GOPRO_woVAE`` values, others are refused."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    in_channels: Annotated[int, Field(ge=1, le=64)]
    nf: Annotated[int, Field(ge=1, le=1024)]
    front_blocks: Annotated[int, Field(ge=0, le=256)]
    back_blocks: Annotated[int, Field(ge=0, le=256)]
    kernel_dim: Annotated[int, Field(ge=1, le=8192)]
    extractor_blocks: Annotated[int, Field(ge=0, le=64)]
    use_vae: bool


def crop_problem(size: int | None, network: KernelWizardOptions | None = None) -> str | None:
    """Why crops of side ``size`` do not fit the kernel extraction of the KernelWizard of shape ``network``, or None
    when they do."""
    blocks = (network or {}).get("extractor_blocks", _EXTRACTOR_BLOCKS)
    minimum = crop_minimum(blocks)
    if size is not None and size % MULTIPLE == 0 and size >= minimum:
        return None
    padding = ", and its extractor pads that map by 1" if blocks else ""
    return (
        f"is {size}, but KernelWizard needs crops whose side is a multiple of {MULTIPLE}, at least {minimum} "
        f"(its kernel map is 1/{MULTIPLE} of the crop{padding})"
    )


def crop_minimum(extractor_blocks: int) -> int:
    # the extractor's blocks reflect-pad the code map by 1, which needs a map of at least 2 x 2
    return 2 * MULTIPLE if extractor_blocks else MULTIPLE


class KernelWizard(Stochastic, nn.Module):
    """Blur-kernel encoder and adapter; the defaults are the ``GOPRO_woVAE`` configuration that Blur2Blur loads.

    Official option names: ``in_channels`` is ``input_nc``, ``front_blocks``/``back_blocks`` are
    ``front_RBs``/``back_RBs``, ``extractor_blocks`` is ``KernelExtractor.n_blocks``; the norms are ``none``,
    the padding ``reflect`` and dropout off, as in every released file. ``use_vae=True`` (``GOPRO_wVAE``) widens
    the kernel extractor to ``2 * kernel_dim`` output channels (same keys, other shapes); its code is
    ``mean + sigma * noise`` with the noise drawn from :attr:`generator`.
    """

    def __init__(
        self,
        in_channels: int = 3,
        nf: int = 64,
        front_blocks: int = 10,
        back_blocks: int = 20,
        kernel_dim: int = 512,
        extractor_blocks: int = _EXTRACTOR_BLOCKS,
        use_vae: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_dim = kernel_dim
        self.extractor_blocks = extractor_blocks
        self.use_vae = use_vae
        lrelu = nn.LeakyReLU(0.1)  # one shared module, as in the official Sequentials (it has no parameters)
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(in_channels, nf, 3, 1, 1),
            lrelu,
            nn.Conv2d(nf, nf, 3, 2, 1),
            lrelu,
            nn.Conv2d(nf, nf, 3, 2, 1),
            lrelu,
            *(ResidualBlockNoBN(nf) for _ in range(front_blocks)),
        )
        self.kernel_extractor = KernelExtractor(nf, 2 * kernel_dim if use_vae else kernel_dim, extractor_blocks)
        self.adapter = KernelAdapter(nf, kernel_dim)
        self.recon_trunk = nn.Sequential(
            *(ResidualBlockNoBN(nf) for _ in range(back_blocks)),
            nn.Conv2d(nf, 4 * nf, 3, 1, 1),
            nn.PixelShuffle(2),
            lrelu,
            nn.Conv2d(nf, 4 * _RECON_CHANNELS, 3, 1, 1),
            nn.PixelShuffle(2),
            lrelu,
            nn.Conv2d(_RECON_CHANNELS, _RECON_CHANNELS, 3, 1, 1),
            lrelu,
            nn.Conv2d(_RECON_CHANNELS, in_channels, 3, 1, 1),
        )

    def encode(self, sharp: Tensor, blurry: Tensor) -> tuple[Tensor, Tensor]:
        """The code map's mean and sigma for a pair (sigma is zero without the VAE): the official ``forward``."""
        minimum = crop_minimum(self.extractor_blocks)
        _check_image("sharp", sharp, minimum)
        _check_image("blurry", blurry, minimum)
        _check_same("blurry", blurry, "sharp", sharp)
        output = self.kernel_extractor(self.feature_extractor(sharp), self.feature_extractor(blurry))
        if self.use_vae:
            return output[:, : self.kernel_dim], output[:, self.kernel_dim :]
        return output, torch.zeros_like(output)

    def kernel(self, sharp: Tensor, blurry: Tensor) -> Tensor:
        """The blur of the pair ``(sharp, blurry)`` as a code map, ``B x kernel_dim x H/128 x W/128``."""
        mean, sigma = self.encode(sharp, blurry)
        if not self.use_vae:
            return mean
        noise = torch.randn(mean.shape, generator=self.generator, dtype=mean.dtype).to(mean.device)
        return mean + sigma * noise

    def adapt(self, sharp: Tensor, kernel: Tensor) -> Tensor:
        """The blur that the code map ``kernel`` describes applied to ``sharp`` (the official ``adaptKernel``)."""
        _check_image("sharp", sharp, MULTIPLE)
        batch, _, height, width = sharp.shape
        expected = (batch, self.kernel_dim, height // MULTIPLE, width // MULTIPLE)
        if tuple(kernel.shape) != expected:
            raise ValueError(
                f"KernelWizard: a {_size(sharp)} image needs a {_size(expected)} kernel code map, got {_size(kernel)}"
            )
        return self.recon_trunk(self.adapter(self.feature_extractor(sharp), kernel)) + sharp

    def forward(self, sharp: Tensor, blurry: Tensor) -> Tensor:
        """``blurry`` re-synthesised from ``sharp`` and its own code: what KernelWizard training fits to ``blurry``."""
        return self.adapt(sharp, self.kernel(sharp, blurry))

    def transfer(self, sharp: Tensor, known_sharp: Tensor, known_blurry: Tensor) -> Tensor:
        """The blur of the pair ``(known_sharp, known_blurry)`` applied to ``sharp``: Blur2Blur's real images."""
        # Blur2Blur runs this with autograd on although the network is frozen; callers should use no_grad
        _check_same("known_sharp", known_sharp, "sharp", sharp)  # the code map must fit sharp's bottleneck
        return self.adapt(sharp, self.kernel(known_sharp, known_blurry))


def _size(shape: Tensor | tuple[int, ...]) -> str:
    return " x ".join(map(str, shape.shape if isinstance(shape, Tensor) else shape))


def _check_image(name: str, image: Tensor, minimum: int) -> None:
    """Raise ``ValueError`` unless ``image`` is B x C x H x W, H and W multiples of 128 and at least ``minimum``."""
    if image.dim() != 4 or any(side % MULTIPLE or side < minimum for side in image.shape[-2:]):
        raise ValueError(
            f"KernelWizard: {name} must be B x C x H x W with H and W multiples of {MULTIPLE} and at least {minimum}, "
            f"got {_size(image)}"
        )


def _check_same(name: str, image: Tensor, other_name: str, other: Tensor) -> None:
    """Raise ``ValueError`` unless the two images have the same batch size, height and width."""
    if (image.shape[0], *image.shape[-2:]) != (other.shape[0], *other.shape[-2:]):
        raise ValueError(
            f"KernelWizard: {name} ({_size(image)}) and {other_name} ({_size(other)}) differ in batch size or size"
        )


__all__ = ["MULTIPLE", "KernelWizard", "KernelWizardOptions", "crop_problem"]
