"""MAP's inference path on CPU as two numba kernels: each group's sum of the projection, then the broadcast.

The first kernel does not compute the projection at every pixel. Let C be the image summed down its columns
(``C(y, x)`` = rows 0..y of column x) and T the 3x3 convolution of C, so that T(y, x) is the projection summed down
column x to row y. A group's sum of the projection is the sum over its vertical runs (equal labels down a column),
and a run from row ``top`` to row ``bottom`` sums to ``T(bottom, x) - T(top - 1, x)``. So every pixel whose label
differs from the one below adds T to its own group and subtracts it from the group below, the last row adds T to its
groups, and row 0 subtracts T(-1). T is needed at those pixels only: one in eight in 8x8 blocks, about one in 35 on
Felzenszwalb or SLIC label maps of photos.

Per row the kernel adds the next image row to three prefix rows, marks the pixels whose label changes below, and
sums T over each run of marked pixels with the same labels above and below: from nine run sums of the prefix rows and
the taps that reach past the run's ends, or, along stretches of 32 or more marked columns, with a vectorised
convolution of the prefix rows. The features are never written out. The prefix sums are float64, exact for images in
[0, 1] or [0, 255]; a column that mixes magnitudes far apart (1e17 and 1, say) loses the small values below the
large one, as its sums round at 1e-16 of it. The cost is in the marked pixels: on segmentations 0.4x to 0.8x the
time of the projection at every pixel, on label noise (a new label at every pixel: not a segmentation) up to 2.4x
(``benchmarks/README.md``).

The kernel reads labels as they are (uint8, or any other dtype widened to int64): its tables grow, a row at a time, to
a power of two above the bitwise OR of the labels seen (no pass over the labels before its own). It declines
(``project_and_sum`` says why) negative labels or labels as wide as the image, which ``group_ids`` compacts first, and
images with a NaN or inf pixel, which the prefix sums would carry to every group below it: MAP pools those with torch
ops. The kernels are single-threaded (``nogil``: other threads run meanwhile).
"""

from __future__ import annotations

import enum

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit
from torch import Tensor

#: reassociation and FMA contraction let LLVM vectorise; no "nnan"/"ninf": NaN and inf pixels propagate as in torch
_JIT = {"cache": True, "nogil": True, "fastmath": {"contract", "reassoc"}, "boundscheck": False}
#: the helpers are inlined by numba itself: as calls they pay for passing arrays (measured: twice the time per run)
_INLINE = {**_JIT, "inline": "always"}
#: columns per word of the change mask (one uint64 holds eight uint8 marks)
WORD = 8
#: stretches of at least this many marked words are summed with a vectorised convolution, shorter ones per run
DENSE_WORDS = 4


@njit(**_INLINE)
def _convolve_row(rows, weight, c, ky, first, second, start, stop):  # pragma: no cover - compiled
    """``first`` and ``second`` (views from column ``start``) += the taps of row ``ky`` for channels c and c + 1."""
    for ci in range(3):
        source = rows[ci, start : stop + 2]  # indexed from 0: LLVM drops the wraparound checks and vectorises
        f0, f1, f2 = weight[c, ci, ky, 0], weight[c, ci, ky, 1], weight[c, ci, ky, 2]
        s0, s1, s2 = weight[c + 1, ci, ky, 0], weight[c + 1, ci, ky, 1], weight[c + 1, ci, ky, 2]
        for i in range(stop - start):
            left, centre, right = source[i], source[i + 1], source[i + 2]
            first[i] += f0 * left + f1 * centre + f2 * right
            second[i] += s0 * left + s1 * centre + s2 * right


@njit(**_INLINE)
def _convolve(rows, weight, c, start, stop, out):  # pragma: no cover - compiled
    """``out[0:2, x]`` = channels c and c + 1 of the 3x3 convolution of the prefix rows at columns [start, stop).

    ``rows`` are the prefix rows y - 1, y, y + 1, each ``3 x (padded width + 2)`` with column x at index x + 1 and
    zero columns around the image. Multiply-add chains are three taps long, both channels from one read of a row.
    """
    first, second = out[0, start:stop], out[1, start:stop]
    first[:] = 0.0
    second[:] = 0.0
    _convolve_row(rows[0], weight, c, 0, first, second, start, stop)
    _convolve_row(rows[1], weight, c, 1, first, second, start, stop)
    _convolve_row(rows[2], weight, c, 2, first, second, start, stop)


@njit(**_INLINE)
def _run_terms(row, taps, c, ci, ky, total, start, stop):  # pragma: no cover - compiled
    """Row ``ky``'s taps summed over columns [start, stop] of the convolution: the row's run sum times its summed
    weight, plus the left taps' column before the run minus its last, plus the right taps' column after it minus
    its first (``taps[c, ci, ky]`` = summed, left and right weight)."""
    left = row[ci, start] - row[ci, stop + 1]
    right = row[ci, stop + 2] - row[ci, start + 1]
    first = taps[c, ci, ky, 0] * total + taps[c, ci, ky, 1] * left + taps[c, ci, ky, 2] * right
    second = taps[c + 1, ci, ky, 0] * total + taps[c + 1, ci, ky, 1] * left + taps[c + 1, ci, ky, 2] * right
    return first, second


@njit(**_INLINE)
def _run_sum(rows, taps, c, start, stop):  # pragma: no cover - compiled
    """Channels c and c + 1 of the convolution of the prefix rows, summed over columns [start, stop]."""
    top, middle, bottom = rows
    first, second = 0.0, 0.0
    for ci in range(3):
        above, level, below = 0.0, 0.0, 0.0
        for x in range(start + 1, stop + 2):
            above += top[ci, x]
            level += middle[ci, x]
            below += bottom[ci, x]
        f0, s0 = _run_terms(top, taps, c, ci, 0, above, start, stop)
        f1, s1 = _run_terms(middle, taps, c, ci, 1, level, start, stop)
        f2, s2 = _run_terms(bottom, taps, c, ci, 2, below, start, stop)
        first += f0 + f1 + f2
        second += s0 + s1 + s2
    return first, second


@njit(**_INLINE)
def _add_row(rows, weights, labels, sign, depth, b, tables, values):  # pragma: no cover - compiled
    """Every pixel of a row adds ``sign`` times T to its group, and ``sign * depth`` to its group's size (T at row y
    sums the projection of ``depth = y + 1`` rows)."""
    (weight, _), (sums, counts), width = weights, tables, labels.shape[0]
    for c in range(0, weight.shape[0], 2):
        _convolve(rows, weight, c, 0, width, values)
        group, start = labels[0], 0
        run_first, run_second = 0.0, 0.0
        for x in range(width + 1):
            if x == width or labels[x] != group:
                sums[b, c, group] += sign * run_first
                sums[b, c + 1, group] += sign * run_second
                if c == 0:
                    counts[b, group] += sign * depth * (x - start)
                if x == width:
                    break
                group, start = labels[x], x
                run_first, run_second = 0.0, 0.0
            run_first += values[0, x]
            run_second += values[1, x]


@njit(**_INLINE)
def _add_marked(rows, weights, labels, below, marked, start, stop, depth, b, tables, values):  # pragma: no cover
    """The marked pixels of row y in columns [start, stop) add T to their group and subtract it from the group below
    (and ``depth = y + 1`` to and from the sizes)."""
    (weight, taps), (sums, counts) = weights, tables
    dense = stop - start >= DENSE_WORDS * WORD
    for c in range(0, weight.shape[0], 2):
        if dense:
            _convolve(rows, weight, c, start, stop, values)
        first, group, other = -1, 0, 0  # the current run: first column, its group and the group below
        run_first, run_second = 0.0, 0.0
        for x in range(start, stop + 1):
            ends = x == stop or not marked[x] or labels[x] != group or below[x] != other
            if ends and first >= 0:
                if not dense:
                    run_first, run_second = _run_sum(rows, taps, c, first, x - 1)
                sums[b, c, group] += run_first
                sums[b, c + 1, group] += run_second
                sums[b, c, other] -= run_first
                sums[b, c + 1, other] -= run_second
                if c == 0:
                    counts[b, group] += depth * (x - first)
                    counts[b, other] -= depth * (x - first)
                first = -1
            if x < stop and marked[x]:
                if first < 0:
                    first, group, other = x, labels[x], below[x]
                    run_first, run_second = 0.0, 0.0
                if dense:
                    run_first += values[0, x]
                    run_second += values[1, x]


class Declined(enum.Enum):
    """Why :func:`project_and_sum` gave no sums."""

    #: a pixel is NaN or inf, which the column sums would carry to every group below it: pool with torch ops
    NOT_FINITE = 1
    #: an id is negative, or too wide for tables the size of the image: compact the ids, then call again
    WIDE_IDS = 2


#: ``_project_and_sum``'s outcomes (numba returns them as ints)
DONE, NOT_FINITE, WIDE_IDS = 0, Declined.NOT_FINITE.value, Declined.WIDE_IDS.value


@njit(**_JIT)
def _project_and_sum(image, ids, weight, bias, groups, narrow):  # pragma: no cover - compiled
    """The projection (with ``bias``) summed over each group and the group sizes: ``(sums, counts, outcome)``.

    ``sums`` is ``B x C x G`` float64 and ``counts`` ``B x G``, with G >= ``groups`` grown, a row at a time, to a power
    of two above the bitwise OR of the ids seen (>= their largest), so the ids need no pass before this one.
    ``weight`` has an even number of output channels (they go in pairs). ``narrow`` gets a copy of ``ids`` in its
    (smaller) dtype, for the broadcast to read fewer bytes. The outcome is DONE, NOT_FINITE (a column sum is NaN or
    inf: the sums are not usable) or WIDE_IDS (an id is negative, or the OR reaches ``max(2 * groups, H * W)``:
    such labels need compacting; the sums stop there).
    """
    batch, _, height, width = image.shape
    channels = weight.shape[0]
    weight64 = np.empty((channels, 3, 3, 3))
    taps = np.empty((channels, 3, 3, 3))  # per output and input channel and row: summed, left and right weight
    for c in range(channels):
        for ci in range(3):
            for ky in range(3):
                for kx in range(3):
                    weight64[c, ci, ky, kx] = weight[c, ci, ky, kx]
                taps[c, ci, ky, 0] = weight64[c, ci, ky, 0] + weight64[c, ci, ky, 1] + weight64[c, ci, ky, 2]
                taps[c, ci, ky, 1] = weight64[c, ci, ky, 0]
                taps[c, ci, ky, 2] = weight64[c, ci, ky, 2]
    weights = weight64, taps
    sums = np.zeros((batch, channels, groups))
    counts = np.zeros((batch, groups), np.int64)
    padded = -(-width // WORD) * WORD
    prefix = np.zeros((4, 3, padded + 2))  # rows y - 1, y, y + 1 in turn, and a row of zeros; column x at x + 1
    marked = np.zeros(padded, np.uint8)
    words = marked.view(np.uint64)
    values = np.empty((2, padded))
    bits, limit = 0, max(2 * groups, height * width)  # the bitwise OR of the ids so far, and its bound
    for b in range(batch):
        labels = ids[b, 0]
        for x in range(width):
            bits |= labels[x]
        if bits < 0 or bits >= limit:
            return sums, counts, WIDE_IDS
        sums, counts = _grown(sums, counts, bits)
        for ci in range(3):
            source, target = image[b, ci, 0], prefix[0, ci, 1:]
            for x in range(width):
                target[x] = source[x]
        # row 0 subtracts T(-1): its prefix rows -2 and -1 are zero
        _add_row((prefix[3], prefix[3], prefix[0]), weights, labels, -1.0, 0, b, (sums, counts), values)
        for y in range(height - 1):
            rows = top, middle, bottom = prefix[(y - 1) % 3 if y > 0 else 3], prefix[y % 3], prefix[(y + 1) % 3]
            labels, below, narrowed = ids[b, y], ids[b, y + 1], narrow[b, y]
            red, green, blue = image[b, 0, y + 1], image[b, 1, y + 1], image[b, 2, y + 1]
            red_sum, green_sum, blue_sum = bottom[0, 1:], bottom[1, 1:], bottom[2, 1:]
            red_above, green_above, blue_above = middle[0, 1:], middle[1, 1:], middle[2, 1:]
            for x in range(width):  # one loop for all five arrays (measured: about 12% faster than four loops)
                red_sum[x] = red_above[x] + red[x]
                green_sum[x] = green_above[x] + green[x]
                blue_sum[x] = blue_above[x] + blue[x]
                narrowed[x] = labels[x]
                marked[x] = labels[x] != below[x]
                bits |= below[x]
            if bits < 0 or bits >= limit:
                return sums, counts, WIDE_IDS
            sums, counts = _grown(sums, counts, bits)
            k = 0
            while k < words.shape[0]:  # stretches of words with a mark
                if words[k] == 0:
                    k += 1
                    continue
                first = k
                while k < words.shape[0] and words[k] != 0:
                    k += 1
                start, stop = first * WORD, min(k * WORD, width)
                _add_marked(rows, weights, labels, below, marked, start, stop, y + 1, b, (sums, counts), values)
        # the last row adds T(height - 1); the prefix row below it is itself (rows past the image add nothing)
        y = height - 1
        last, labels, narrowed = prefix[y % 3], ids[b, y], narrow[b, y]
        for x in range(width):
            narrowed[x] = labels[x]
        rows = prefix[(y - 1) % 3 if y > 0 else 3], last, last
        _add_row(rows, weights, labels, 1.0, height, b, (sums, counts), values)
        for ci in range(3):
            for x in range(1, width + 1):
                if not np.isfinite(last[ci, x]):
                    return sums, counts, NOT_FINITE
        for c in range(channels):  # the bias, once per pixel of each group
            for g in range(sums.shape[2]):
                sums[b, c, g] += np.float64(bias[c]) * counts[b, g]
    return sums, counts, DONE


@njit(**_INLINE)
def _grown(sums, counts, bits):  # pragma: no cover - compiled
    """``sums`` and ``counts`` as they are if they hold id ``bits``, else copied into tables of the smallest power
    of two of groups above it."""
    if bits < sums.shape[2]:
        return sums, counts
    groups = 1
    while groups <= bits:
        groups *= 2
    grown_sums = np.zeros((sums.shape[0], sums.shape[1], groups))
    grown_counts = np.zeros((counts.shape[0], groups), np.int64)
    grown_sums[:, :, : sums.shape[2]] = sums
    grown_counts[:, : counts.shape[1]] = counts
    return grown_sums, grown_counts


@njit(**_JIT)
def _broadcast(table, ids, out):  # pragma: no cover - compiled
    """``out[b, c, y, x] = table[b, c, ids[b, y, x]]``."""
    for b in range(out.shape[0]):
        for y in range(out.shape[2]):
            labels = ids[b, y]
            for c in range(out.shape[1]):
                values, target = table[b, c], out[b, c, y]
                for x in range(out.shape[3]):
                    target[x] = values[labels[x]]


def project_and_sum(
    image: Tensor, ids: Tensor, weight: Tensor, bias: Tensor, groups: int = 1
) -> tuple[Tensor, Tensor, Tensor] | Declined:
    """Per-group sums of ``conv2d(image, weight, bias, padding=1)`` and group sizes, in one pass.

    Args:
        image: ``B x 3 x H x W`` float32 or float64, on the CPU.
        ids: ``B x H x W`` group ids, any integer dtype but uint64: labels as they are (the tables then grow to hold
            them, with no pass over them before), or the compact ids of ``group_ids``. uint8 ids are read as they
            are, every other dtype as int64 (a copy unless it is int64 already).
        weight: ``C x 3 x 3 x 3``, the image's dtype.
        bias: ``C``.
        groups: the least number of groups in the tables.

    Returns:
        ``sums`` (``B x C x G``, float64), ``counts`` (``B x G``, int64) with G >= ``groups`` (a power of two above the
        bitwise OR of the ids if that is larger; groups without pixels are empty), and ``ids`` in the smallest of
        uint8, int16, int32 and int64 that holds G (for :func:`broadcast`: 7 bytes per pixel less to read than
        int64 ids, when they fit uint8). Or why there are none: ``Declined.NOT_FINITE`` if the image has a NaN or
        inf pixel, ``Declined.WIDE_IDS`` if an id is negative or its bitwise OR with the others reaches
        ``max(2 * groups, H * W)``.
    """
    batch, planes, height, width = image.shape
    if planes != 3 or not height or not width or ids.shape != (batch, height, width) or weight.shape[1:] != (3, 3, 3):
        # the kernels index without bounds checks: a wrong shape would read or write past the arrays
        raise ValueError(
            "project_and_sum: needs a B x 3 x H x W image with H, W >= 1, B x H x W ids and a C x 3 x 3 x 3 weight, "
            f"got {tuple(image.shape)}, {tuple(ids.shape)} and {tuple(weight.shape)}"
        )
    channels = weight.shape[0]
    # numba compiles one specialisation per combination of argument dtypes, 20 to 30 s each on 2 cores (then cached):
    # ids are uint8 (SAM-Deblur's gray code maps) or int64, so label maps of any dtype cost at most two per image dtype
    if ids.dtype != torch.uint8:
        ids = ids.long()
    paired = torch.cat([weight, weight.new_zeros(channels % 2, *weight.shape[1:])])  # an even number of channels
    narrow = np.empty(ids.shape, _narrowest(groups))
    arrays = _array(image), _array(ids), _array(paired), _array(F.pad(bias, (0, channels % 2)))
    sums, counts, outcome = _project_and_sum(*arrays, groups, narrow)
    if outcome != DONE:
        return Declined(outcome)
    if narrow.dtype != _narrowest(counts.shape[1]):  # the tables grew past the copy's dtype: it is truncated
        narrow = _array(ids).astype(_narrowest(counts.shape[1]))
    return torch.from_numpy(sums[:, :channels]), torch.from_numpy(counts), torch.from_numpy(narrow)


def _narrowest(groups: int) -> type[np.integer]:
    """The smallest of uint8, int16, int32 and int64 that holds ids up to ``groups - 1``."""
    return next(t for t in (np.uint8, np.int16, np.int32, np.int64) if groups - 1 <= np.iinfo(t).max)


def broadcast(table: Tensor, ids: Tensor) -> Tensor:
    """``B x C x H x W``: each pixel gets ``table[b, :, ids[b, y, x]]`` (``table``: ``B x C x groups``).

    Bounds checks are off: the ids must lie in ``[0, groups)``, as those of :func:`project_and_sum` do.
    """
    out = torch.empty(table.shape[0], table.shape[1], *ids.shape[1:], dtype=table.dtype)
    _broadcast(_array(table), _array(ids), out.numpy())
    return out


def _array(tensor: Tensor) -> np.ndarray:
    """A C-contiguous NumPy view (bool as uint8: NumPy bools do not index)."""
    if tensor.dtype == torch.bool:
        tensor = tensor.view(torch.uint8)
    return tensor.detach().contiguous().numpy()
