"""Tiled inference: peak memory on a 12-megapixel image, and agreement with whole-image inference.

Each measurement runs in a fresh process, so its peak resident memory (ru_maxrss) is its own:
  * tiled inference of a 4000 x 3000 image (goal: < 3 GB RSS);
  * whole-image inference of a 1024 x 768 image that fits, and the same image tiled: the PSNR
    between the two outputs (goal: > 50 dB) and their peak memories side by side.

    python benchmarks/tiled_inference.py [--backbone unet.small] [--tile 512] [--overlap 32]
    python benchmarks/tiled_inference.py --config runs/quickstart/config.yaml \
        --checkpoint runs/quickstart/checkpoints/best.pth

With random weights a residual backbone is close to the identity and tiles agree trivially;
pass a trained stack (``--config`` and ``--checkpoint``) for a meaningful PSNR.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def photo(width: int, height: int) -> torch.Tensor:
    """scikit-image's astronaut resized to the requested size (a real photo, not noise)."""
    import cv2
    from skimage import data

    image = cv2.resize(data.astronaut().astype(np.float32) / 255, (width, height), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(image.clip(0, 1).transpose(2, 0, 1).copy()).unsqueeze(0)


def worker(args: argparse.Namespace) -> None:
    from deblurstack import build_stack
    from deblurstack.engine.inference import predict

    torch.manual_seed(0)
    stack = build_stack(args.config or {"stack": {"backbone": {"type": args.backbone}}}).eval()
    if args.checkpoint:
        from pathlib import Path

        from deblurstack.checkpoint import load_stack_weights

        load_stack_weights(stack, Path(args.checkpoint), "auto")
    image = photo(args.width, args.height)
    start = time.perf_counter()
    with torch.inference_mode():
        output = predict(stack, image, tile=args.tile or None, overlap=args.overlap)
    seconds = time.perf_counter() - start
    if args.save:
        torch.save(output, args.save)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"peak_gib": peak, "seconds": seconds}))


def measure(args: argparse.Namespace, width: int, height: int, tile: int, save: str = "") -> dict:
    command = [sys.executable, __file__, "--worker", "--backbone", args.backbone, "--width", str(width),
               "--height", str(height), "--tile", str(tile), "--overlap", str(args.overlap), "--save", save,
               "--config", args.config, "--checkpoint", args.checkpoint]  # fmt: skip
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="unet.small")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--config", default="", help="config file of a trained stack (instead of --backbone)")
    parser.add_argument("--checkpoint", default="", help="its weights")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--save", default="")
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="deblurstack-tiles-"))
    big = measure(args, 4000, 3000, args.tile)
    whole = measure(args, 1024, 768, 0, str(folder / "whole.pt"))
    tiled = measure(args, 1024, 768, args.tile, str(folder / "tiled.pt"))
    a, b = (torch.load(folder / name, weights_only=True).clamp(0, 1) for name in ("whole.pt", "tiled.pt"))
    psnr = 10 * torch.log10(1 / ((a - b) ** 2).mean()).item()
    weights = f"{args.config} + {args.checkpoint}" if args.checkpoint else f"backbone {args.backbone}, random weights"
    print(f"{weights}, tile {args.tile}, overlap {args.overlap}, {torch.get_num_threads()} threads")
    print(
        f"  12 MP (4000x3000) tiled: peak RSS {big['peak_gib']:.2f} GiB, {big['seconds']:.1f} s "
        f"(goal < 3 GB: {'met' if big['peak_gib'] * 2**30 < 3e9 else 'NOT met'})"
    )
    print(
        f"  1024x768 whole: peak RSS {whole['peak_gib']:.2f} GiB, {whole['seconds']:.2f} s; "
        f"tiled: {tiled['peak_gib']:.2f} GiB, {tiled['seconds']:.2f} s"
    )
    print(f"  PSNR tiled vs whole = {psnr:.1f} dB (goal > 50 dB: {'met' if psnr > 50 else 'NOT met'})")


if __name__ == "__main__":
    main()
