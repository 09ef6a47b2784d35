"""Blur2Blur training throughput: our batched step vs the official formulation's batch-1 loop, same networks.

The official loop (VinAIResearch/Blur2Blur ``train.py`` + ``models/blur2blur_model.py``), as it runs, one image at
a time (its gradient penalty only works at batch 1):

    for each sample: real = KernelWizard transfer of a known pair's blur onto the sharp image, with autograd on
                     fake = G(blurry) (three scales); real downsampled x0.25, x0.5
                     D step: 0.5 (hinge(D(real)) + hinge(D(fake.detach()))) + GP(real, fake) ; backward ; Adam
                     G step: -mean D(fake) + 0.8 sum_s VGG(fake_s, blurry_s) ; backward ; Adam

Ours (the ``adversarial`` trainer's step): the same, on a batch of ``--batch`` images at once, the transfer under
``no_grad``. Both use the same modules (MIMO-UNet translator, PatchGAN with instance norm, VGG16 perceptual loss,
KernelWizard; random weights, which do not change the time). Rounds of both alternate; the medians of images per
second give the ratio (goal >= 3 at batch 8, 256 x 256). Then inference: translator + deblurrer (NAFNet-w32)
against the deblurrer alone, eval mode without autograd.

``--channels-last`` runs ours as the trainer's ``channels_last: true`` does: networks and batches in that layout.

    python benchmarks/blur2blur_training.py [--size 256] [--batch 8] [--rounds 3] [--channels-last]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deblurstack import build_stack
from deblurstack.plugins.blur2blur.discriminator import PatchGAN
from deblurstack.plugins.blur2blur.kernel_wizard import KernelWizard
from deblurstack.plugins.blur2blur.losses import (
    VGG16Perceptual,
    discriminator_loss,
    downsample_pyramid,
    generator_loss,
    gradient_penalty,
)


class Networks:
    def __init__(self, channels_last: bool = False) -> None:
        torch.manual_seed(0)
        self.translator = build_stack(
            {"stack": {"translator": {"type": "blur2blur"}, "backbone": {"type": "unet.tiny"}}}
        ).translator
        self.discriminator = PatchGAN(norm="instance")
        self.perceptual = VGG16Perceptual()
        self.kernel_wizard = KernelWizard().eval()
        if channels_last:
            for network in (self.translator, self.discriminator, self.perceptual, self.kernel_wizard):
                network.to(memory_format=torch.channels_last)
        self.g_optimizer = torch.optim.Adam(self.translator.parameters(), 2e-4, betas=(0.5, 0.999))
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), 2e-4, betas=(0.5, 0.999))

    def step(self, batch: dict[str, torch.Tensor], official: bool) -> None:
        """One D step and one G step on ``batch`` (the official code: at batch 1, transfer with autograd on)."""
        with torch.set_grad_enabled(official):
            real = self.kernel_wizard.transfer(batch["sharp"], batch["known_sharp"], batch["known_blur"])
        real = downsample_pyramid(real.detach() if official else real, 3)
        fake = self.translator(batch["input"])
        loss_d = discriminator_loss(self.discriminator(real), self.discriminator([f.detach() for f in fake]), "hinge")
        alpha = torch.rand(real[-1].shape[0], 1, 1, 1)
        loss_d = loss_d + gradient_penalty(self.discriminator, real[-1], fake[-1], alpha)
        self.d_optimizer.zero_grad()
        loss_d.backward()
        self.d_optimizer.step()
        self.discriminator.requires_grad_(False)
        loss_g = generator_loss(self.discriminator(fake), "hinge") + 0.8 * self.perceptual(fake, batch["input"])
        self.g_optimizer.zero_grad()
        loss_g.backward()
        self.g_optimizer.step()
        self.discriminator.requires_grad_(True)


def images_per_second(networks: dict[bool, Networks], batch: dict[str, torch.Tensor], official: bool) -> float:
    count = batch["input"].shape[0]
    start = time.perf_counter()
    if official:
        for i in range(count):
            networks[True].step({k: v[i : i + 1] for k, v in batch.items()}, official=True)
    else:
        networks[False].step(batch, official=False)
    return count / (time.perf_counter() - start)


@torch.inference_mode()
def inference_times(size: int, repeats: int) -> tuple[float, float]:
    deblurrer = build_stack({"stack": {"backbone": {"type": "nafnet.w32"}}}).eval()
    chain = build_stack({"stack": {"translator": {"type": "blur2blur"}, "backbone": {"type": "nafnet.w32"}}}).eval()
    image = torch.rand(1, 3, size, size)
    alone, both = [], []
    deblurrer(image), chain(image)  # warm-up
    for _ in range(repeats):
        for model, times in ((deblurrer, alone), (chain, both)):
            start = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - start)
    return statistics.median(alone), statistics.median(both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="crop side (KernelWizard: a multiple of 128, >= 256)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each (after one warm-up each)")
    parser.add_argument("--repeats", type=int, default=5, help="inference repeats")
    parser.add_argument("--channels-last", action="store_true", help="ours in channels_last (the trainer's option)")
    args = parser.parse_args()

    networks = {True: Networks(), False: Networks(args.channels_last)}
    generator = torch.Generator().manual_seed(0)
    batch = {
        k: torch.rand(args.batch, 3, args.size, args.size, generator=generator)
        for k in ("input", "sharp", "known_sharp", "known_blur")
    }
    layouts = {True: batch, False: batch}
    if args.channels_last:
        layouts[False] = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
    rates: dict[bool, list[float]] = {True: [], False: []}
    for official in (True, False):  # warm-up
        images_per_second(networks, layouts[official], official)
    for _ in range(args.rounds):
        for official in (True, False):
            rates[official].append(images_per_second(networks, layouts[official], official))
    official, ours = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"training at {args.size}x{args.size}, {torch.get_num_threads()} threads, {args.rounds} rounds (median):")
    print(f"  official batch-1 loop: {official:.3f} images/s")
    layout = ", channels_last" if args.channels_last else ""
    print(f"  ours at batch {args.batch}{layout}:      {ours:.3f} images/s")
    print(f"  ratio: {ours / official:.2f}x (goal >= 3 at batch 8)")
    alone, both = inference_times(args.size, args.repeats)
    print(
        f"inference at {args.size}x{args.size}: NAFNet-w32 alone {alone * 1000:.0f} ms, "
        f"Blur2Blur (MIMO-UNet) + NAFNet-w32 {both * 1000:.0f} ms, ratio {both / alone:.2f}x"
    )


if __name__ == "__main__":
    main()
