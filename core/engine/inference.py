"""Running a stack on images: whole or in overlapping tiles, and on files for ``deblurstack run``."""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from deblurstack.data import IMAGE_SUFFIXES, ImageError, Pair, read_image_and_depth, to_tensor, write_image
from deblurstack.engine import TILE_OVERLAP


def predict(
    stack: Callable[..., Tensor | tuple[Tensor, ...]],
    image: Tensor,
    aux: Mapping[str, Tensor] | None = None,
    tile: int | None = None,
    overlap: int = TILE_OVERLAP,
) -> Tensor | tuple[Tensor, ...]:
    """``stack(image, **aux)``, computed in overlapping ``tile x tile`` windows when the image is larger.

    Windows are blended with weights that ramp linearly across the ``overlap`` band, so seams
    fade out; auxiliary maps are cropped with their window. Memory then depends on the tile, not
    on the image. A ``stack`` that returns a tuple of images of its input's size (see
    :func:`with_translated`) gets each of them blended the same way.
    """
    aux = dict(aux or {})
    height, width = image.shape[-2:]
    if not tile or (height <= tile and width <= tile):
        return stack(image, **aux)
    if overlap * 2 >= tile:
        raise ValueError(f"overlap {overlap} must be less than half the tile {tile}")
    sums: list[Tensor] = []
    weights = torch.zeros(1, 1, height, width, device=image.device)
    for top in _starts(height, tile, overlap):
        for left in _starts(width, tile, overlap):
            window = (..., slice(top, top + tile), slice(left, left + tile))
            result = stack(image[window], **{k: v[window] for k, v in aux.items()})
            parts = result if isinstance(result, tuple) else (result,)
            if not sums:
                # float32 sums, as the weights, whatever the model's precision
                sums = [image.new_zeros(image.shape[0], p.shape[1], height, width, dtype=torch.float32) for p in parts]
            weight = _ramp(parts[0].shape[-2], overlap, image.device)[:, None] * _ramp(
                parts[0].shape[-1], overlap, image.device
            )
            for total, part in zip(sums, parts, strict=True):
                total[window] += part * weight
            weights[window] += weight
    blended = tuple(total / weights for total in sums)
    return blended if isinstance(result, tuple) else blended[0]


def with_translated(stack: nn.Module) -> Callable[..., tuple[Tensor, Tensor]]:
    """``stack`` returning ``(deblurred, translated)`` from one pass: the translator's image is the one the priors
    and the backbone saw (for :func:`predict`, which tiles both alike), without running the translator again.
    Raises ``ValueError`` for a stack without a translator."""
    if getattr(stack, "translator", None) is None:
        raise ValueError("the stack has no translator, so there are no translated images to save")

    def both(image: Tensor, **aux: Tensor) -> tuple[Tensor, Tensor]:
        output = stack.run(image, aux)
        return output.image, output.translated

    return both


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _ramp(length: int, overlap: int, device: torch.device) -> Tensor:
    """1 in the middle, falling linearly to 1/(overlap+1) over ``overlap`` pixels at both ends."""
    position = torch.arange(length, device=device, dtype=torch.float32)
    distance = torch.minimum(position + 1, length - position)
    return (distance / (overlap + 1)).clamp(max=1.0)


# ---------------------------------------------------------------------- files


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images) and glob patterns, in the order given; nothing found is an error."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(item) if Path(m).suffix.lower() in IMAGE_SUFFIXES)
            if not matches:
                raise ImageError(f"{item}: no such file, folder or matching images")
            found += matches
    if not found:
        raise ImageError(f"no images in {', '.join(inputs)}")
    return found


def output_name(path: Path, bits: int = 8) -> str:
    """The name the output of ``path`` is written under: its own, lower-case suffix; a 16-bit image whose format
    holds only 8 bits becomes a PNG."""
    suffix = path.suffix.lower()
    return f"{path.stem}{suffix if bits == 8 or suffix in ('.png', '.tif', '.tiff') else '.png'}"


def run_on_files(
    stack: nn.Module,
    paths: Iterable[Path],
    out_dir: Path,
    device: torch.device,
    tile: int | None = None,
    overlap: int = TILE_OVERLAP,
    aux_sources: Mapping[str, Callable[[np.ndarray, Pair], np.ndarray]] | None = None,
    skip_bad: bool = False,
    save_translated: bool = False,
) -> tuple[list[Path], list[str]]:
    """Deblur each file into ``out_dir`` under its own name, keeping 16-bit files 16-bit.

    ``aux_sources`` compute the priors' auxiliary inputs (masks) from each whole image, as datasets do.
    ``save_translated``: also write what the stack's translator made of each file to ``out_dir/translated``.
    Returns the files written and, with ``skip_bad``, the problems of the files skipped (otherwise the
    first unreadable file stops the run with an :class:`ImageError` naming it).
    """
    written, skipped = [], []
    model = with_translated(stack) if save_translated else stack
    stack.eval()
    with torch.inference_mode():
        for path in paths:
            try:
                image, bits = read_image_and_depth(path)
            except ImageError as error:
                if not skip_bad:
                    raise
                skipped.append(str(error))
                continue
            tensor = to_tensor(image)[None].to(device)
            pair = Pair(name=path.stem, input=path, target=path)
            aux = {
                name: to_tensor(source(image, pair))[None].to(device) for name, source in (aux_sources or {}).items()
            }
            result = predict(model, tensor, aux, tile=tile, overlap=overlap)
            output, translated = result if save_translated else (result, None)
            output = output.clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
            target = out_dir / output_name(path, bits)
            write_image(target, output, bit_depth=bits)
            written.append(target)
            if translated is not None:
                translated = translated.clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
                write_image(out_dir / "translated" / target.name, translated, bits)
    return written, skipped


__all__ = ["TILE_OVERLAP", "expand_inputs", "output_name", "predict", "run_on_files", "with_translated"]
