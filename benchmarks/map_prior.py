"""SAM-Deblur's MAP unit: ours (label map; numba kernels, and the torch-ops path) vs the official dense formulation.

All include the learned projection (conv3x3 3->2, conv1x1 2->2, the same weights) and run in eval, batch 1,
on random label maps with exactly M groups (a random label per 8x8 block, every label present). Ours is the
inference path (no autograd: ``kernels.py``); "ops" is the same forward with autograd recording, as in training
(one conv, ``bincount``, ``scatter_add_``, ``gather``; also the GPU path). The dense
formulation is written here from the description of SAM-Deblur's ``mask_average`` (a loop over the images, each
an M x H x W x C broadcast of float masks M x 1 x H x W, which its data loader provides; building them is not
timed). Time: interleaved pairs in one process, median ratio. Memory: one fresh subprocess per measurement, peak
RSS during the call minus the RSS before it (inputs and weights excluded; the dense formulation's mask input is
listed separately). The peak is VmHWM, reset just before the call: ``resource.getrusage().ru_maxrss`` would
report the parent's peak, which Linux carries across exec. Floor: the bytes the unit must touch (read the image,
12 B/px, and the int64 labels, 8 B/px; write 2 float channels, 8 B/px) at the copy bandwidth measured here.

    python benchmarks/map_prior.py [--threads 1] [--repeats 9] [--max-dense-gib 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial

import torch

from deblurstack.plugins.sam_deblur.pooling import MaskAveragePooling

SIZES = [(256, 256), (720, 1280)]
GROUPS = [32, 128, 256]
CHANNELS = 2
BLOCK = 8
UNIT_BYTES_PER_PIXEL = 3 * 4 + 8 + CHANNELS * 4  # image in, labels in, prior channels out


def label_map(height: int, width: int, groups: int, seed: int = 0) -> torch.Tensor:
    """1 x H x W int64 with exactly ``groups`` distinct labels: one random label per BLOCK x BLOCK block."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = -(-height // BLOCK), -(-width // BLOCK)
    assert rows * cols >= groups, "image too small for that many groups"
    cells = torch.cat([torch.arange(groups), torch.randint(0, groups, (rows * cols - groups,), generator=generator)])
    cells = cells[torch.randperm(rows * cols, generator=generator)].view(rows, cols)
    return cells.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:height, :width][None].contiguous()


def dense_masks(labels: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """The official input: per image, float masks M x 1 x H x W (level sets; value 1 here)."""
    out = []
    for sample in labels:
        masks = torch.zeros(groups, 1, *sample.shape)
        masks.view(groups, -1).scatter_(0, sample.view(1, -1), 1.0)  # no M x H x W temporaries
        out.append(masks)
    return out


def dense_unit(module: MaskAveragePooling, image: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """The official formulation: two convolutions, then per image an M x H x W x C broadcast."""
    features = module.pre_seg_in(module.pre_seg(image))
    out = torch.empty_like(features)
    for b, m in enumerate(masks):
        f = features[b].permute(1, 2, 0)[None]  # 1 x H x W x C
        m = m.squeeze(1)[..., None]  # M x H x W x 1
        averages = (f * m).sum(dim=(1, 2), keepdim=True) / (m.sum(dim=(1, 2), keepdim=True) + 1e-8)
        result = (averages * m).sum(dim=0)
        remaining = 1 - m.sum(dim=0, keepdim=True).clamp(0, 1)
        remaining_average = (f * remaining).sum(dim=(1, 2), keepdim=True) / (remaining.sum() + 1e-8)
        out[b] = (result + (remaining_average * remaining).squeeze(0)).permute(2, 0, 1)
    return out


def dense_bytes(height: int, width: int, groups: int) -> int:
    """Rough peak of the dense formulation: masks plus two M x H x W x C products."""
    return groups * height * width * 4 * (1 + 2 * CHANNELS)


def setup(height: int, width: int, groups: int):
    torch.manual_seed(0)
    module = MaskAveragePooling(seg_channels=CHANNELS).eval()
    return module, torch.rand(1, 3, height, width), label_map(height, width, groups)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: on Linux that keeps the parent's peak across exec."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so setup transients do not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure_memory(kind: str, height: int, width: int, groups: int) -> dict[str, int]:
    """Run in a fresh subprocess: peak RSS growth during one call of ``kind`` (ours, dense)."""
    module, image, labels = setup(height, width, groups)
    masks = dense_masks(labels, groups) if kind == "dense" else None
    with torch.no_grad():
        module(image, {"masks": labels})  # numba's compilation (or its cache) is not the call's memory
    reset_peak_rss()
    before = rss_bytes()
    with torch.inference_mode():
        if kind == "ours":
            module(image, {"masks": labels})
        else:
            dense_unit(module, image, masks)
    peak = peak_rss_bytes()
    return {"working": max(peak - before, 0), "peak": peak, "mask_input": sum(m.nbytes for m in masks or [])}


def ops_path(module: MaskAveragePooling, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The forward as training runs it: autograd recording selects the torch-ops path."""
    with torch.enable_grad():
        return module(image, {"masks": labels}).channels


def in_subprocess(kind: str, height: int, width: int, groups: int, threads: int) -> dict[str, int]:
    code = (
        f"import json, torch, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); torch.set_num_threads({threads});"
        f"import map_prior; print(json.dumps(map_prior.measure_memory({kind!r}, {height}, {width}, {groups})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def copy_bandwidth(repeats: int) -> float:
    """Bytes per second of a 256 MiB tensor copy (read + write counted)."""
    source = torch.rand(64 * 2**20)
    target = torch.empty_like(source)
    target.copy_(source)
    seconds = statistics.median(timed(lambda: target.copy_(source)) for _ in range(repeats))
    return 2 * source.nbytes / seconds


def time_case(height: int, width: int, groups: int, repeats: int, run_dense: bool) -> dict[str, float]:
    """Median times of ours, the ops path and the dense formulation, interleaved; max |dense - ours|, |ops - ours|."""
    module, image, labels = setup(height, width, groups)
    masks = dense_masks(labels, groups) if run_dense else None
    with torch.no_grad():
        ours = partial(module, image, {"masks": labels})
        ops = partial(ops_path, module, image, labels)
        dense = partial(dense_unit, module, image, masks) if run_dense else None
        for _ in range(2):  # warm-up: numba's compilation or cache, allocator, oneDNN primitives
            ours(), ops()
        diff = (dense() - ours().channels).abs().max().item() if dense else float("nan")
        ops_diff = (ops() - ours().channels).abs().max().item()
        times: dict[str, list[float]] = {"ours": [], "ops": [], "dense": [], "ratio": []}
        for i in range(repeats):
            order = [("ours", ours), ("dense", dense)] if i % 2 == 0 else [("dense", dense), ("ours", ours)]
            pair = {name: timed(call) for name, call in order if call is not None}
            times["ours"].append(pair["ours"])
            times["ops"].append(timed(ops))
            if dense:
                times["dense"].append(pair["dense"])
                times["ratio"].append(pair["dense"] / pair["ours"])
    row = {name: statistics.median(values) if values else float("nan") for name, values in times.items()}
    return {**row, "diff": diff, "ops_diff": ops_diff}


#: table columns: title, width and format of each value (times in ms, memory in MiB)
COLUMNS = [
    ("ours ms", 8, ".2f", lambda r: r["ours"] * 1e3),
    ("ops ms", 7, ".2f", lambda r: r["ops"] * 1e3),
    ("dense ms", 9, ".1f", lambda r: r["dense"] * 1e3),
    ("ratio", 6, ".0f", lambda r: r["ratio"]),
    ("floor ms", 8, ".2f", lambda r: r["floor"] * 1e3),
    ("ours/fl", 7, ".1f", lambda r: r["ours"] / r["floor"]),
    ("ops/fl", 6, ".1f", lambda r: r["ops"] / r["floor"]),
    ("ours MiB", 8, ".1f", lambda r: r["ours_mib"]),
    ("dense MiB", 9, ".1f", lambda r: r["dense_mib"]),
    ("+masks MiB", 10, ".1f", lambda r: r["masks_mib"]),
    ("|dense-ours|", 12, ".1e", lambda r: r["diff"]),
    ("|ops-ours|", 10, ".1e", lambda r: r["ops_diff"]),
]
LEGEND = (
    "ours = MaskAveragePooling forward without autograd (numba kernels, projection included); ops = the same "
    "forward with autograd recording (torch ops: what training and the GPU run); dense = the official formulation "
    "(projection included); ratio = median of dense/ours over interleaved pairs; floor = {unit} B/px at the copy "
    "bandwidth; MiB = peak RSS growth during one call in a fresh process; +masks = the dense formulation's "
    "M x 1 x H x W float input; |a-b| = max abs difference of the outputs"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved pairs per case")
    parser.add_argument("--max-dense-gib", type=float, default=8.0, help="skip dense cases estimated above this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bandwidth = copy_bandwidth(15)
    print(f"load before: {os.getloadavg()}; {args.threads} thread(s); torch {torch.__version__}")
    print(f"copy bandwidth {bandwidth / 1e9:.2f} GB/s (read + write, 256 MiB copy, median of 15)")
    header = f"{'size':>9} {'M':>4} | " + " ".join(f"{title:>{span}}" for title, span, _, _ in COLUMNS)
    print(header + "\n" + "-" * len(header))
    results = {}
    for height, width in SIZES:
        for groups in GROUPS:
            run_dense = dense_bytes(height, width, groups) <= args.max_dense_gib * 2**30
            row = time_case(height, width, groups, args.repeats, run_dense)
            row["floor"] = height * width * UNIT_BYTES_PER_PIXEL / bandwidth
            ours_mem = in_subprocess("ours", height, width, groups, args.threads)
            dense_mem = in_subprocess("dense", height, width, groups, args.threads) if run_dense else None
            row["ours_mib"] = ours_mem["working"] / 2**20
            row["dense_mib"] = dense_mem["working"] / 2**20 if dense_mem else float("nan")
            row["masks_mib"] = dense_mem["mask_input"] / 2**20 if dense_mem else float("nan")
            results[(height, width, groups)] = row
            cells = " ".join(f"{value(row):>{span}{fmt}}" for _, span, fmt, value in COLUMNS)
            skipped = f"  (dense skipped: ~{dense_bytes(height, width, groups) / 2**30:.1f} GiB)"
            print(f"{f'{width}x{height}':>9} {groups:4d} | {cells}" + ("" if run_dense else skipped), flush=True)
    print(f"load after: {os.getloadavg()}")
    print(LEGEND.format(unit=UNIT_BYTES_PER_PIXEL))
    if (720, 1280, 128) not in results:
        return
    row = results[(720, 1280, 128)]
    memory = [results[(720, 1280, m)]["ours_mib"] for m in GROUPS]
    verdicts = [
        (row["ratio"] >= 100, f"dense / ours at 1280x720, M=128: {row['ratio']:.0f}x (goal >= 100x)"),
        (row["ours"] <= 3 * row["floor"], f"ours / floor at 1280x720, M=128: {row['ours'] / row['floor']:.1f} (<= 3)"),
        (
            max(memory) <= 1.1 * min(memory) + 1,
            f"ours' memory at 1280x720, M = {GROUPS}: {', '.join(f'{m:.1f}' for m in memory)} MiB (not growing with M)",
        ),
    ]
    for met, text in verdicts:
        print(f"  {'met    ' if met else 'NOT met'}  {text}")


if __name__ == "__main__":
    main()
