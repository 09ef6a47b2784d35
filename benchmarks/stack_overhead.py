"""Stack(no prior, backbone) forward vs the bare backbone forward: the price of composition.

Both calls run the same module with the same weights on the same input, interleaved, so drift
in machine load hits both alike. Prints the median time ratio (goal: <= 1.02).

    python benchmarks/stack_overhead.py [--backbone unet.small] [--size 256] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deblurstack import build_stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="unet.small", help="backbone type, e.g. unet.bladenet")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stack = build_stack({"stack": {"backbone": {"type": args.backbone}}}).eval()
    backbone = stack.backbone
    image = torch.rand(1, 3, args.size, args.size)

    def timed(call) -> float:
        start = time.perf_counter()
        call(image)
        return time.perf_counter() - start

    with torch.inference_mode():
        for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
            stack(image), backbone(image)
        assert torch.equal(stack(image), backbone(image))
        ratios, stack_times, bare_times = [], [], []
        for i in range(args.repeats):
            # alternate which goes first, so neither always runs on a warmer cache
            if i % 2:
                bare, composed = timed(backbone), timed(stack)
            else:
                composed, bare = timed(stack), timed(backbone)
            ratios.append(composed / bare)
            stack_times.append(composed)
            bare_times.append(bare)

    ratio = statistics.median(ratios)
    print(f"backbone {args.backbone}, {args.size}x{args.size}, batch 1, {args.threads} threads, {args.repeats} pairs")
    print(f"  bare backbone forward  median {statistics.median(bare_times) * 1e3:8.2f} ms")
    print(f"  Stack forward          median {statistics.median(stack_times) * 1e3:8.2f} ms")
    print(f"  median ratio Stack / backbone = {ratio:.4f}  (goal <= 1.02: {'met' if ratio <= 1.02 else 'NOT met'})")


if __name__ == "__main__":
    main()
