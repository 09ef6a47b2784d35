"""NAFNet-w32 inference: ours (default) vs a plain reference formulation of the official maths, and each option.

The reference below restates the official NAFNet computation from its description (not from its code): NCHW
contiguous tensors; LayerNorm2d as mean and biased variance over the channels of each pixel followed by a
per-channel affine; SimpleGate by ``chunk``; SCA as ``x * conv1x1(adaptive_avg_pool(x))``; residuals
``inp + x * beta``. It loads our module's state_dict strictly, so both run the same weights (random, with
non-zero beta/gamma so no block is the identity). Every variant runs on the same input with the same threads,
interleaved in rotating order each round, so drift in machine load hits all alike. Prints per variant the
median time, the median per-round ratio reference / variant, the max abs difference to the reference at the
benchmark size and at an odd size (exact: <= 1e-5), the minor page faults of one forward, and the
matrix-multiply floor: the convolutions' MACs (torch.utils.flop_counter on the meta device) at the GEMM peak
measured with a large float32 torch.mm.

Page faults matter on CPU: glibc returns freed multi-megabyte buffers to the system and faults them in again on
the next forward, which costs the NCHW reference more than ours (it allocates more). With an allocator that
keeps them (``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296``, jemalloc, tcmalloc) both
get faster and the ratio shrinks; run it both ways.

    python benchmarks/nafnet_inference.py [--size 256] [--repeats 10] [--threads N] [--compile]

``--compile`` adds torch.compile rows (about a minute of compilation each on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblurstack.plugins.nafnet.model import NAFNet

from _matmul_floor import best_rate, meta_macs

CL = torch.channels_last
EXACT = 1e-5
GOAL = 1.3
W32 = {"width": 32, "middle_blk_num": 1, "enc_blk_nums": (1, 1, 1, 28), "dec_blk_nums": (1, 1, 1, 1)}


# ---------------------------------------------------------------------------------------------------------------
# the reference formulation: the official maths, stated plainly (same parameter names, so the state_dict loads)


class RefLayerNorm2d(nn.Module):
    def __init__(self, c: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(1, keepdim=True)  # over the channels of each pixel
        var = (x - mu).pow(2).mean(1, keepdim=True)  # biased
        return self.weight.view(1, -1, 1, 1) * ((x - mu) / (var + self.eps).sqrt()) + self.bias.view(1, -1, 1, 1)


def ref_simple_gate(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=1)
    return a * b


class RefNAFBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1, self.norm2 = RefLayerNorm2d(c), RefLayerNorm2d(c)
        self.beta, self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1)), nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: Tensor) -> Tensor:
        x = ref_simple_gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(ref_simple_gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class RefNAFNet(nn.Module):
    def __init__(self, width: int, middle_blk_num: int, enc_blk_nums, dec_blk_nums) -> None:
        super().__init__()
        self.intro = nn.Conv2d(3, width, 3, padding=1)
        self.ending = nn.Conv2d(width, 3, 3, padding=1)
        self.encoders, self.decoders, self.ups, self.downs = (nn.ModuleList() for _ in range(4))
        c = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[RefNAFBlock(c) for _ in range(num)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle_blks = nn.Sequential(*[RefNAFBlock(c) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[RefNAFBlock(c) for _ in range(num)]))
        self.multiple = 2 ** len(enc_blk_nums)

    def forward(self, inp: Tensor) -> Tensor:
        h, w = inp.shape[-2:]
        inp = F.pad(inp, (0, -w % self.multiple, 0, -h % self.multiple))  # zeros, right and bottom
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips), strict=True):
            x = decoder(up(x) + skip)
        return (self.ending(x) + inp)[:, :, :h, :w]


# ---------------------------------------------------------------------------------------------------------------
# the same maths with inference options, one switch each, on the reference module's weights


@dataclass(frozen=True)
class Options:
    channels_last: bool = False  # activations in channels_last memory format
    weights_channels_last: bool = False  # conv weights in channels_last too
    layer_norm: bool = False  # LayerNorm2d as F.layer_norm over the NHWC view (a copy when activations are NCHW)
    addcmul: bool = False  # residual inp + x * beta in one kernel
    fold_scales: bool = False  # beta/gamma folded into conv3/conv5 weights and biases (precomputed)
    fold_sca: bool = False  # SCA: conv3(x * s) as a conv with weight W3 * s (batch 1); the 1x1 conv as F.linear
    split_gate: bool = False  # SimpleGate from two half convs (contiguous halves) instead of chunk
    fused_add: bool = False  # residual add as a oneDNN conv post-op (private torch.ops.mkldnn op)
    in_place: bool = False  # block intermediates reused in place (fewer fresh buffers, fewer page faults)


def _conv(x: Tensor, conv: nn.Conv2d, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    weight = conv.weight if weight is None else weight
    return F.conv2d(x, weight, conv.bias if bias is None else bias, conv.stride, conv.padding, 1, conv.groups)


class Variant:
    """A functional forward of RefNAFNet's weights with some options switched on."""

    def __init__(self, ref: RefNAFNet, options: Options) -> None:
        self.ref, self.o = ref, options
        self.weights: dict[int, Tensor] = {}  # id(conv) -> weight in the chosen layout
        self.folded: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
        for module in ref.modules():
            if isinstance(module, nn.Conv2d):
                w = module.weight.detach()
                self.weights[id(module)] = w.contiguous(memory_format=CL) if options.weights_channels_last else w
        for module in ref.modules():
            if isinstance(module, RefNAFBlock):
                for conv, scale in ((module.conv3, module.beta), (module.conv5, module.gamma)):
                    s = scale.detach().view(-1)
                    self.folded[id(conv), "w"] = (self.weights[id(conv)] * s.view(-1, 1, 1, 1), conv.bias.detach() * s)
                for conv in (module.conv1, module.conv2, module.conv4):  # split halves for split_gate
                    w, b = self.weights[id(conv)], conv.bias.detach()
                    half = w.shape[0] // 2
                    self.folded[id(conv), "a"] = (w[:half].clone(), b[:half].clone())
                    self.folded[id(conv), "b"] = (w[half:].clone(), b[half:].clone())

    def conv(self, x: Tensor, conv: nn.Conv2d) -> Tensor:
        return _conv(x, conv, self.weights[id(conv)])

    def norm(self, x: Tensor, norm: RefLayerNorm2d) -> Tensor:
        if self.o.layer_norm:
            return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.weight, norm.bias, norm.eps).permute(
                0, 3, 1, 2
            )
        return norm(x)

    def gated(self, x: Tensor, first: nn.Conv2d, depthwise: nn.Conv2d | None) -> Tensor:
        if not self.o.split_gate:
            x = self.conv(x, first)
            return ref_simple_gate(self.conv(x, depthwise) if depthwise is not None else x)
        halves = []
        for part in "ab":
            h = _conv(x, first, *self.folded[id(first), part])
            if depthwise is not None:
                w, b = self.folded[id(depthwise), part]
                h = F.conv2d(h, w, b, 1, 1, 1, w.shape[0])
            halves.append(h)
        return halves[0] * halves[1]

    def residual(self, inp: Tensor, x: Tensor, conv: nn.Conv2d, scale: Tensor, sca: Tensor | None = None) -> Tensor:
        o = self.o
        if o.fold_scales or sca is not None:
            w, b = self.folded[id(conv), "w"] if o.fold_scales else (self.weights[id(conv)], conv.bias)
            if sca is not None:
                w = w * sca.view(1, -1, 1, 1)
            if o.fold_scales and o.fused_add:
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, inp, w, b, [0, 0], [1, 1], [1, 1], 1, "add", None, None, [], None
                )
            x = _conv(x, conv, w, b)
            if o.fold_scales:
                return inp + x
        else:
            x = self.conv(x, conv)
        return torch.addcmul(inp, x, scale) if o.addcmul else inp + x * scale

    def block(self, blk: RefNAFBlock, inp: Tensor) -> Tensor:
        if self.o.in_place:
            return self.block_in_place(blk, inp)
        x = self.gated(self.norm(inp, blk.norm1), blk.conv1, blk.conv2)
        attention = blk.sca[1]
        if self.o.fold_sca and x.shape[0] == 1:
            s = F.linear(x.mean((2, 3)), attention.weight.flatten(1), attention.bias)
            y = self.residual(inp, x, blk.conv3, blk.beta, sca=s)
        else:
            y = self.residual(inp, x * self.conv(F.adaptive_avg_pool2d(x, 1), attention), blk.conv3, blk.beta)
        x = self.gated(self.norm(y, blk.norm2), blk.conv4, None)
        return self.residual(y, x, blk.conv5, blk.gamma)

    def block_in_place(self, blk: RefNAFBlock, inp: Tensor) -> Tensor:
        n = self.norm(inp, blk.norm1)
        x = self.conv(self.conv(n, blk.conv1), blk.conv2)
        a, b = x.chunk(2, dim=1)
        x = torch.mul(a, b, out=n)  # the norm's output is dead after conv1: reuse its buffer
        x.mul_(self.conv(F.adaptive_avg_pool2d(x, 1), blk.sca[1]))
        y = self.conv(x, blk.conv3).mul_(blk.beta).add_(inp)
        n = self.norm(y, blk.norm2)
        x = self.conv(n, blk.conv4)
        a, b = x.chunk(2, dim=1)
        x = torch.mul(a, b, out=n)
        return self.conv(x, blk.conv5).mul_(blk.gamma).add_(y)

    def __call__(self, inp: Tensor) -> Tensor:
        ref = self.ref
        h, w = inp.shape[-2:]
        inp = F.pad(inp, (0, -w % ref.multiple, 0, -h % ref.multiple))
        x = inp.contiguous(memory_format=CL) if self.o.channels_last else inp
        x = self.conv(x, ref.intro)
        skips = []
        for encoder, down in zip(ref.encoders, ref.downs, strict=True):
            for blk in encoder:
                x = self.block(blk, x)
            skips.append(x)
            x = self.conv(x, down)
        for blk in ref.middle_blks:
            x = self.block(blk, x)
        for decoder, up, skip in zip(ref.decoders, ref.ups, reversed(skips), strict=True):
            x = F.pixel_shuffle(self.conv(x, up[0]), 2) + skip
            for blk in decoder:
                x = self.block(blk, x)
        return (self.conv(x, ref.ending) + inp)[:, :, :h, :w].contiguous()


# ---------------------------------------------------------------------------------------------------------------


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def build(seed: int = 0) -> tuple[NAFNet, RefNAFNet]:
    torch.manual_seed(seed)
    ours = NAFNet(**W32)
    with torch.no_grad():
        for name, parameter in ours.named_parameters():
            if name.endswith(("beta", "gamma")):
                parameter.normal_(0, 0.5)  # not the identity
    ref = RefNAFNet(**W32)
    ref.load_state_dict(ours.state_dict(), strict=True)  # the same keys and weights
    return ours.eval(), ref.eval()


def _minor_faults() -> int:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--odd", type=int, nargs=2, default=(251, 237), help="odd size for the exactness check")
    parser.add_argument("--repeats", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows (slow to compile)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    ours, ref = build()
    ours_plain = NAFNet(**W32).train()  # train mode (dropout rate 0): the plain official formulation
    ours_plain.load_state_dict(ours.state_dict())
    image = torch.rand(1, 3, args.size, args.size)
    odd = torch.rand(1, 3, *args.odd)

    reference = "reference (official maths, NCHW, no_grad)"
    default = "ours default (eval, inference_mode)"
    variants: dict[str, tuple[Callable[[Tensor], Tensor], Callable]] = {
        reference: (ref, torch.no_grad),
        "reference under inference_mode": (ref, torch.inference_mode),
        default: (ours, torch.inference_mode),
        "ours default (eval, no_grad)": (ours, torch.no_grad),
        "ours in train mode (plain path, no_grad)": (ours_plain, torch.no_grad),
    }
    cl_ln = {"channels_last": True, "layer_norm": True}
    option_rows = {
        "channels_last activations": Options(channels_last=True),
        "channels_last activations + weights": Options(channels_last=True, weights_channels_last=True),
        "F.layer_norm (NCHW: permute copies)": Options(layer_norm=True),
        "addcmul residual (NCHW)": Options(addcmul=True),
        "SCA folded into conv3 (NCHW)": Options(fold_sca=True),
        "split-conv SimpleGate (NCHW)": Options(split_gate=True),
        "CL + F.layer_norm": Options(**cl_ln),
        "CL + F.layer_norm + addcmul (= ours)": Options(**cl_ln, addcmul=True),
        "CL + F.layer_norm + addcmul + SCA folded": Options(**cl_ln, addcmul=True, fold_sca=True),
        "CL + F.layer_norm + beta/gamma folded": Options(**cl_ln, fold_scales=True),
        "CL + F.layer_norm + split-conv gate": Options(**cl_ln, addcmul=True, split_gate=True),
        "CL + F.layer_norm + in-place intermediates": Options(**cl_ln, in_place=True),
    }
    try:  # a private op of oneDNN builds (what inductor's fusions call)
        torch.ops.mkldnn._convolution_pointwise.binary  # noqa: B018
        option_rows["CL + LN + folded + fused conv+add (mkldnn)"] = Options(**cl_ln, fold_scales=True, fused_add=True)
    except (AttributeError, RuntimeError):
        pass
    for name, options in option_rows.items():
        variants[name] = (Variant(ref, options), torch.inference_mode)
    fixed_size = set()  # compiled rows: an odd size would compile again
    if args.compile:
        ref_cl = RefNAFNet(**W32).eval()
        ref_cl.load_state_dict(ref.state_dict())
        ref_cl.to(memory_format=CL)
        for name, model, prepare in (
            ("torch.compile(reference)", ref, lambda x: x),
            ("torch.compile(reference, channels_last)", ref_cl, lambda x: x.contiguous(memory_format=CL)),
        ):
            compiled = torch.compile(model, dynamic=False)

            def call(x, compiled=compiled, prepare=prepare):
                return compiled(prepare(x))

            with torch.inference_mode():
                seconds = _timed(lambda call=call: call(image))
            variants[f"{name} [compiled in {seconds:.0f} s]"] = (call, torch.inference_mode)
            fixed_size.add(f"{name} [compiled in {seconds:.0f} s]")

    names = list(variants)
    differences: dict[str, tuple[float, float]] = {}
    faults: dict[str, int] = {}
    with torch.no_grad():
        expected, expected_odd = ref(image), ref(odd)
    for name, (call, mode) in variants.items():
        with mode():
            for _ in range(2):  # warm-up: allocator, oneDNN primitive caches
                call(image)
            before = _minor_faults()
            out = call(image)
            faults[name] = _minor_faults() - before
            odd_diff = float("nan") if name in fixed_size else (call(odd) - expected_odd).abs().max().item()
            differences[name] = ((out - expected).abs().max().item(), odd_diff)

    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.repeats):
        shift = round_ % len(names)  # rotate the order, so no variant always runs first or after the same one
        this_round = {}
        for name in names[shift:] + names[:shift]:
            call, mode = variants[name]
            with mode():
                this_round[name] = _timed(lambda call=call: call(image))
        for name in names:
            times[name].append(this_round[name])
            ratios[name].append(this_round[reference] / this_round[name])

    multiply_adds = meta_macs(lambda: NAFNet(**W32), args.size)
    peak = best_rate()
    floor = 2 * multiply_adds / peak
    load = os.getloadavg()
    print(
        f"NAFNet-w32, 1x3x{args.size}x{args.size}, {args.threads} threads, {args.repeats} interleaved rounds; "
        f"torch {torch.__version__}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"output max |value| {expected.abs().max().item():.3f}; exact: max |diff| to the reference <= {EXACT:g} "
        f"at {args.size}x{args.size} and at {args.odd[0]}x{args.odd[1]}; faults: minor page faults in one forward"
    )
    width = max(map(len, names)) + 2
    header = (
        f"{'variant':<{width}} {'median ms':>10} {'ref/variant':>12} {'max|diff|':>10} {'odd size':>10} "
        f"{'faults':>8}  exact"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        diff, diff_odd = differences[name]
        exact = "yes" if diff <= EXACT and not diff_odd > EXACT else "NO"
        print(
            f"{name:<{width}} {statistics.median(times[name]) * 1e3:>10.1f} {statistics.median(ratios[name]):>12.3f}"
            f" {diff:>10.2e} {diff_odd:>10.2e} {faults[name]:>8}  {exact}"
        )
    over = {name: statistics.median(times[name]) / floor for name in (reference, default)}
    print(
        f"{'matmul floor':<{width}} {floor * 1e3:>10.1f} {'':>12}   {multiply_adds / 1e9:.2f} G conv MACs "
        f"at the best measured float32 rate (torch.mm or 3x3 conv), {peak / 1e9:.1f} GFLOP/s; "
        f"the reference takes {over[reference]:.2f}x the floor, "
        f"ours {over[default]:.2f}x"
    )
    ratio = statistics.median(ratios[default])
    exact = max(differences[default]) <= EXACT
    print(
        f"median ratio reference / ours-default = {ratio:.3f}  "
        f"(goal >= {GOAL} and exact to {EXACT:g}: {'met' if ratio >= GOAL and exact else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
