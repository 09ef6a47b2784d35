"""Image grids at validation: one row per sample, blurry input | [translated |] output | target, saved in the run
folder as ``images/step_XXXXXXXX.png``. A lifecycle plugin: it only implements a run-event hook."""

from __future__ import annotations

from typing import Any

from deblurstack import hookimpl

GAP = 4  # white pixels between tiles


@hookimpl
def deblurstack_validation_end(run: Any, samples: Any) -> None:
    if run.rank != 0 or not samples:
        return
    import numpy as np

    from deblurstack.data import write_image

    rows = [_join([t.clamp(0, 1).permute(1, 2, 0).numpy() for t in _tiles(s)], axis=1) for s in samples]
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=1.0) for row in rows]
    write_image(run.directory / "images" / f"step_{run.step:08d}.png", _join(rows, axis=0))


def _tiles(sample: Any) -> list[Any]:
    """input | output | target, or input | translated | output | target for a stack with a translator."""
    translated = getattr(sample, "translated", None)
    return [sample.input, *([translated] if translated is not None else []), sample.output, sample.target]


def _join(tiles: list[Any], axis: int) -> Any:
    """Concatenate along ``axis`` with white gaps between the tiles."""
    import numpy as np

    shape = list(tiles[0].shape)
    shape[axis] = GAP
    gap = np.ones(shape, dtype=tiles[0].dtype)
    parts = [tiles[0]]
    for tile in tiles[1:]:
        parts += [gap, tile]
    return np.concatenate(parts, axis=axis)
