"""Restormer inference: ours (default) vs the official formulation, and each inference option alone and combined.

The reference restates the official computation from its description (swz30/Restormer, restormer_arch.py): NCHW
tensors; each LayerNorm rearranges ``b c h w -> b (h w) c``, takes the mean and biased variance over the last
dimension and rearranges back; MDTA L2-normalises q and k along H*W, multiplies by the temperature, softmaxes and
applies the map to v, then project_out; GDFN is ``project_out(gelu(x1) * x2)``. It is our module in training mode
(the same maths; Restormer has no dropout or batch norm) with the official LayerNorm swapped in, so both run the
same weights (random, non-unit temperatures). Variants run on the same input with the same threads, interleaved
in rotating order each round. Prints per variant the median time, the median per-round ratio reference / variant
and the max abs difference to the reference (exact: <= 1e-5), then the same at 1280x720 in 512-pixel tiles
(engine.inference.predict, overlap 32), and the matrix-multiply floor (conv and matmul MACs counted by
torch.utils.flop_counter on the meta device, at the float32 torch.mm rate measured in the same run).

    python benchmarks/restormer_inference.py [--size 256] [--repeats 5] [--tiled-repeats 1] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from einops import rearrange
from torch import Tensor, nn

from deblurstack.engine.inference import predict
from deblurstack.plugins.restormer import model as restormer

from _matmul_floor import best_rate, meta_macs

CL = torch.channels_last
EXACT = 1e-5
GOAL = 2.0


class OfficialLayerNorm(nn.Module):
    """The official LayerNorm: to (b, h*w, c), normalise over the last dimension, back to (b, c, h, w)."""

    def __init__(self, norm: restormer.LayerNorm) -> None:
        super().__init__()
        self.body = norm.body  # same parameters

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        x = rearrange(x, "b c h w -> b (h w) c")
        sigma = x.var(-1, keepdim=True, unbiased=False)
        body = self.body
        if body.bias is None:
            x = x / torch.sqrt(sigma + 1e-5) * body.weight
        else:
            x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(sigma + 1e-5) * body.weight + body.bias
        return rearrange(x, "b (h w) c -> b c h w", h=height, w=width)


def reference_of(model: restormer.Restormer) -> nn.Module:
    ref = copy.deepcopy(model)
    for module in list(ref.modules()):
        if isinstance(module, restormer.TransformerBlock):
            module.norm1, module.norm2 = OfficialLayerNorm(module.norm1), OfficialLayerNorm(module.norm2)
    return ref.train()  # training mode: the official formulation (no dropout, no batch norm)


def _plain_norm_over_nhwc(norm: restormer._Norm, nhwc: Tensor) -> Tensor:
    """The plain per-pixel reduction over the channels (training mode's formula), on the NHWC view."""
    was_training, norm.training = norm.training, True  # without mutating the module for the other variants
    try:
        return norm(nhwc.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    finally:
        norm.training = was_training


@contextlib.contextmanager
def options(layer_norm: bool = True, attention: bool = True, ffn: bool = True, strips: bool = True) -> Iterator[None]:
    """Switch parts of our inference path back to the official formulation (on channels_last activations)."""
    saved = (
        restormer._Norm._over_nhwc,
        restormer.Attention.residual_inference,
        restormer.FeedForward.residual_inference,
        restormer._STRIP_PIXELS,
    )
    if not layer_norm:
        restormer._Norm._over_nhwc = _plain_norm_over_nhwc
    if not attention:
        restormer.Attention.residual_inference = lambda self, x, residual: (
            residual + restormer.Attention.forward(self, x)
        )
    if not ffn:
        restormer.FeedForward.residual_inference = lambda self, x, residual: (
            residual + restormer.FeedForward.forward(self, x)
        )
    if not strips:
        restormer._STRIP_PIXELS = 1 << 40  # one strip: the whole image
    try:
        yield
    finally:
        (
            restormer._Norm._over_nhwc,
            restormer.Attention.residual_inference,
            restormer.FeedForward.residual_inference,
            restormer._STRIP_PIXELS,
        ) = saved


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds at --size")
    parser.add_argument(
        "--tiled-repeats", type=int, default=1, help="rounds at 1280x720 in tiles (0: skip; ~12 min a round)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    ours = restormer.Restormer().eval()
    with torch.no_grad():
        for name, parameter in ours.named_parameters():
            if name.endswith("temperature"):
                parameter.uniform_(0.5, 2.0)
    ref = reference_of(ours)
    image = torch.rand(1, 3, args.size, args.size)

    def variant(**switches: bool) -> Callable[[Tensor], Tensor]:
        def call(x: Tensor) -> Tensor:
            with options(**switches), torch.inference_mode():
                return ours(x)

        return call

    def reference(x: Tensor) -> Tensor:
        with torch.no_grad():
            return ref(x)

    def reference_channels_last(x: Tensor) -> Tensor:
        with torch.no_grad():
            return ref(x.contiguous(memory_format=CL))

    default = "ours default (all of the below, in row strips)"
    variants: dict[str, Callable[[Tensor], Tensor]] = {
        "reference (official formulation, NCHW)": reference,
        "channels_last activations alone (official maths)": reference_channels_last,
        "CL + F.layer_norm": variant(attention=False, ffn=False, strips=False),
        "CL + fused MDTA (norms folded, A and project_out one matrix, residual in the matmul)": variant(
            ffn=False, strips=False
        ),
        "CL + in-place GDFN gate and residual": variant(layer_norm=False, attention=False, strips=False),
        "CL + F.layer_norm + fused MDTA + in-place GDFN (whole image)": variant(strips=False),
        default: variant(),
    }
    names = list(variants)
    expected = reference(image)
    differences = {name: (call(image) - expected).abs().max().item() for name, call in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.repeats):
        shift = round_ % len(names)
        this_round = {name: _timed(lambda name=name: variants[name](image)) for name in names[shift:] + names[:shift]}
        for name in names:
            times[name].append(this_round[name])
            ratios[name].append(this_round[names[0]] / this_round[name])

    multiply_adds = meta_macs(lambda: restormer.Restormer().train(), args.size)  # training mode: the official maths
    rate = best_rate()
    floor = 2 * multiply_adds / rate
    load = os.getloadavg()
    print(
        f"Restormer (motion), 1x3x{args.size}x{args.size}, {args.threads} threads, {args.repeats} interleaved rounds; "
        f"torch {torch.__version__}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    width = max(map(len, names)) + 2
    header = f"{'variant':<{width}} {'median s':>9} {'ref/variant':>12} {'max|diff|':>10}"
    print(header + "\n" + "-" * len(header))
    for name in names:
        print(
            f"{name:<{width}} {statistics.median(times[name]):>9.3f} {statistics.median(ratios[name]):>12.3f} "
            f"{differences[name]:>10.2e}"
        )
    print(
        f"{'matmul floor':<{width}} {floor:>9.3f}   {multiply_adds / 1e9:.1f} G conv+matmul MACs "
        f"at {rate / 1e9:.1f} GFLOP/s; "
        f"reference {statistics.median(times[names[0]]) / floor:.2f}x the floor, "
        f"ours {statistics.median(times[default]) / floor:.2f}x"
    )
    ratio = statistics.median(ratios[default])
    met = ratio >= GOAL and differences[default] <= EXACT
    print(
        f"median ratio reference / ours at {args.size}x{args.size} = {ratio:.3f} "
        f"(goal >= {GOAL}, exact to {EXACT:g}: {'met' if met else 'NOT met'})"
    )

    if args.tiled_repeats:
        large = torch.rand(1, 3, 720, 1280)
        pair = {"reference": reference, "ours": variants[default]}
        results = {
            name: predict(lambda x, call=call: call(x), large, tile=512, overlap=32) for name, call in pair.items()
        }
        difference = (results["ours"] - results["reference"]).abs().max().item()
        tiled = {name: [] for name in pair}
        for round_ in range(args.tiled_repeats):
            for name in list(pair)[round_ % 2 :] + list(pair)[: round_ % 2]:
                tiled[name].append(
                    _timed(lambda call=pair[name]: predict(lambda x: call(x), large, tile=512, overlap=32))
                )
        ref_s, ours_s = (statistics.median(tiled[name]) for name in pair)
        print(
            f"1280x720 in 512-pixel tiles (overlap 32), {args.tiled_repeats} rounds: reference {ref_s:.2f} s, "
            f"ours {ours_s:.2f} s, ratio {ref_s / ours_s:.3f}, max |diff| {difference:.2e}"
        )


if __name__ == "__main__":
    main()
