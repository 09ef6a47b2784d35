"""Time of `deblurstack components list` as a new process, and what it imports.

Prints the median wall time over runs (goal < 1 s) and checks that neither torch nor any
component implementation module was imported. Also times `python -c pass` on the same
interpreter, so the ratio to a bare interpreter start is visible.

    python benchmarks/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PROBE = (
    "import sys\n"
    "from deblurstack.cli import main\n"
    "main(['components', 'list'])\n"
    "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'timm', 'cv2', 'lpips'}\n"
    "               or (m.startswith('deblurstack.plugins.') and m.count('.') > 2))\n"
    "print('HEAVY-IMPORTS', heavy, file=sys.stderr)\n"
)


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    listing = [sys.executable, "-m", "deblurstack", "components", "list"]
    bare = [sys.executable, "-c", "pass"]
    wall(listing)  # warm the file cache
    listing_times, bare_times = [], []
    for _ in range(args.runs):
        listing_times.append(wall(listing))
        bare_times.append(wall(bare))
    probe = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True)
    heavy = probe.stderr.strip().splitlines()[-1]

    median = statistics.median(listing_times)
    print(
        f"deblurstack components list: median {median * 1e3:.0f} ms over {args.runs} runs "
        f"(goal < 1000 ms: {'met' if median < 1 else 'NOT met'})"
    )
    print(
        f"python -c pass:              median {statistics.median(bare_times) * 1e3:.0f} ms "
        f"(ratio {median / statistics.median(bare_times):.1f}x)"
    )
    print(f"modules imported by the listing: {heavy}")


if __name__ == "__main__":
    main()
