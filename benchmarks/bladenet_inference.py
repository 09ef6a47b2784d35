"""BladeNet (lbp + bsa + unet.bladenet) CPU inference: ours against the official formulation, and LBS speed.

The reference restates the official forward pass (komejisatori/BladeNet ``WholeNet`` with MaskNet and SAUp blocks)
from its description, not from its code: NCHW tensors; DoubleConv as conv3x3 -> BatchNorm -> ReLU twice with
BatchNorm as its own op; Up as bilinear x2 (align_corners), zero padding to the skip's size, ``cat([skip, up])``;
SAUp as Up, then DoubleConv(C -> C), ``A = sigmoid(conv7x7(F))``, ``F * A``, DoubleConv(C -> C/2 -> out); the
MaskNet's two logits appended to the image; a sigmoid head. It reads our stack's state dict (random weights,
BatchNorm statistics and affines drawn away from the identity), so both run the same weights. Ours folds
BatchNorm into the convolutions (weights prepared once), runs channels-last in eval mode without autograd, and
computes the 3x3 convolutions of at least 256 channels on maps of at most 128x128 with Winograd's F(4x4, 3x3)
(``folded_conv3x3``), so it can run below the matrix-multiply floor of the direct convolutions.

The two run interleaved in rotating order on one input with the same threads. Printed: median times, the
median per-round ratio reference / ours, the max abs difference (exact: <= 1e-5), the convolutions' MACs and the
time they need at the float32 GEMM rate measured in the same run (the matrix-multiply floor). Then the pairs per
second ``lbs`` makes on a 1280x720 background, with each preset.

    python benchmarks/bladenet_inference.py [--size 256] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblurstack import build_stack
from deblurstack.compose import resolve_node

from _matmul_floor import best_rate, macs

STACK = {"stack": {"priors": [{"type": "lbp"}, {"type": "bsa"}], "backbone": {"type": "unet.bladenet"}}}


class Reference:
    """The official WholeNet forward pass over a state dict of our names (see the module docstring)."""

    def __init__(self, state: dict[str, Tensor]) -> None:
        self.w = state

    def double_conv(self, prefix: str, x: Tensor) -> Tensor:
        for conv, norm in ((0, 1), (3, 4)):
            x = F.conv2d(x, self.w[f"{prefix}.{conv}.weight"], self.w[f"{prefix}.{conv}.bias"], padding=1)
            x = F.batch_norm(
                x,
                self.w[f"{prefix}.{norm}.running_mean"],
                self.w[f"{prefix}.{norm}.running_var"],
                self.w[f"{prefix}.{norm}.weight"],
                self.w[f"{prefix}.{norm}.bias"],
                training=False,
                eps=1e-5,
            )
            x = F.relu(x)
        return x

    def up(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return torch.cat([skip, x], dim=1)

    def unet(self, prefix: str, x: Tensor, attention: dict[int, str] | None = None) -> Tensor:
        skips = [self.double_conv(f"{prefix}.inc.double_conv", x)]
        for k in range(1, 5):
            skips.append(self.double_conv(f"{prefix}.down{k}.maxpool_conv.1.double_conv", F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for j in range(1, 5):
            x = self.up(x, skips.pop())
            point = (attention or {}).get(j)
            if point is not None:  # SAUp: refine, weight by the spatial attention map
                block = f"priors.1.blocks.{point}"
                x = self.double_conv(f"{block}.conv1.double_conv", x)
                x = x * torch.sigmoid(
                    F.conv2d(x, self.w[f"{block}.sa1.conv1.weight"], self.w[f"{block}.sa1.conv1.bias"], padding=3)
                )
            x = self.double_conv(f"{prefix}.up{j}.conv.double_conv", x)
        return F.conv2d(x, self.w[f"{prefix}.outc.conv.weight"], self.w[f"{prefix}.outc.conv.bias"])

    def __call__(self, image: Tensor) -> Tensor:
        logits = self.unet("priors.0.network", image)
        attention = {2: "decoder_s4", 3: "decoder_s2", 4: "decoder_s1"}
        return torch.sigmoid(self.unet("backbone", torch.cat([image, logits], 1), attention))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stack = build_stack(STACK).eval()
    for module in stack.modules():
        if isinstance(module, nn.BatchNorm2d):  # away from the identity, so folding them is really tested
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.normal_(1, 0.1)
            module.bias.data.normal_(0, 0.1)
    reference = Reference(stack.state_dict())
    image = torch.rand(1, 3, args.size, args.size)
    runs = {"official formulation": reference, "ours": stack}
    with torch.inference_mode():
        outputs = {name: run(image) for name, run in runs.items()}
        times: dict[str, list[float]] = {name: [] for name in runs}
        ratios = []
        for round_ in range(args.repeats):
            order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
            for name in order:
                start = time.perf_counter()
                runs[name](image)
                times[name].append(time.perf_counter() - start)
            ratios.append(times["official formulation"][-1] / times["ours"][-1])
    multiply_adds = macs(lambda: reference(image))
    floor = 2 * multiply_adds / best_rate()
    difference = (outputs["ours"] - outputs["official formulation"]).abs().max().item()
    print(f"BladeNet inference, {args.size}x{args.size}, batch 1, {args.threads} threads, {args.repeats} rounds")
    for name, measured in times.items():
        print(f"  {name:22s} median {statistics.median(measured):.3f} s")
    print(
        f"  ratio official / ours  median {statistics.median(ratios):.2f}x (per round: "
        f"{', '.join(f'{r:.2f}' for r in ratios)})"
    )
    print(f"  max abs difference     {difference:.2e}")
    print(
        f"  matrix-multiply floor  {multiply_adds / 1e9:.1f} GMACs -> {floor:.3f} s at the best measured float32 "
        f"rate (torch.mm or 3x3 conv) "
        f"(ours at {statistics.median(times['ours']) / floor:.2f}x the floor)"
    )

    background = [np.random.default_rng(0).random((720, 1280, 3), dtype=np.float32)]
    print("LBS pairs per second at 1280x720 (objects cut before timing)")
    for preset in ("lbs", "lbs.official", "lbs.paper"):
        synthesizer = resolve_node("synthesizer", {"type": preset}).build()
        synthesizer(background, np.random.default_rng(0))  # segments the object photos once
        start, count = time.perf_counter(), 10
        for seed in range(count):
            synthesizer(background, np.random.default_rng(seed))
        print(f"  {preset:14s} {count / (time.perf_counter() - start):.1f} pairs/s")


if __name__ == "__main__":
    main()
