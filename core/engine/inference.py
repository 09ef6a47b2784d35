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
    stack: nn.Module,
    image: Tensor,
    aux: Mapping[str, Tensor] | None = None,
    tile: int | None = None,
    overlap: int = TILE_OVERLAP,
) -> Tensor:
    """``stack(image, **aux)``, computed in overlapping ``tile x tile`` windows when the image is larger.

    Windows are blended with weights that ramp linearly across the ``overlap`` band, so seams
    fade out; auxiliary maps are cropped with their window. Memory then depends on the tile, not
    on the image.
    """
    aux = dict(aux or {})
    height, width = image.shape[-2:]
    if not tile or (height <= tile and width <= tile):
        return stack(image, **aux)
    if overlap * 2 >= tile:
        raise ValueError(f"overlap {overlap} must be less than half the tile {tile}")
    output = torch.zeros(image.shape[0], 3, height, width, device=image.device)
    weights = torch.zeros(1, 1, height, width, device=image.device)
    for top in _starts(height, tile, overlap):
        for left in _starts(width, tile, overlap):
            window = (..., slice(top, top + tile), slice(left, left + tile))
            result = stack(image[window], **{k: v[window] for k, v in aux.items()})
            weight = _ramp(result.shape[-2], overlap, image.device)[:, None] * _ramp(
                result.shape[-1], overlap, image.device
            )
            output[window] += result * weight
            weights[window] += weight
    return output / weights


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
    translator = TranslatedView(stack) if save_translated else None
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
            output = (
                predict(stack, tensor, aux, tile=tile, overlap=overlap).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
            )
            suffix = path.suffix.lower() if bits == 8 or path.suffix.lower() in (".png", ".tif", ".tiff") else ".png"
            target = out_dir / f"{path.stem}{suffix}"
            write_image(target, output, bit_depth=bits)
            written.append(target)
            if translator is not None:
                translated = predict(translator, tensor, tile=tile, overlap=overlap).clamp(0, 1)[0]
                write_image(out_dir / "translated" / target.name, translated.permute(1, 2, 0).cpu().numpy(), bits)
    return written, skipped


class TranslatedView(nn.Module):
    """``stack``'s translator as a stack of its own: ``forward(image, **aux)`` is its finest output (for
    :func:`predict`, so translated images are tiled like deblurred ones)."""

    def __init__(self, stack: nn.Module) -> None:
        super().__init__()
        if getattr(stack, "translator", None) is None:
            raise ValueError("the stack has no translator, so there are no translated images to save")
        self.translator = stack.translator

    def forward(self, image: torch.Tensor, **aux: torch.Tensor) -> torch.Tensor:
        result = self.translator(image)
        return result[-1] if isinstance(result, (list, tuple)) else result


__all__ = ["TILE_OVERLAP", "TranslatedView", "expand_inputs", "predict", "run_on_files"]
