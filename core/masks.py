"""Auxiliary maps that mask sources compute per image: on-disk cache and pre-deblurring.

A mask source (see :class:`deblurstack.contracts.MaskSource`) maps a whole image to an ``H x W``
map. The stack builder wraps it according to two reserved options of its YAML node:

``cache: <folder>``
    Each map is stored under a key made of the image's content and the source's explicit
    parameters, so a changed image or parameter is computed again and nothing else is. Integer
    label maps are written as 8- or 16-bit PNG, float maps as ``.npy`` (no pickles), atomically.
    An entry that cannot be read or does not fit its image is computed again.
    ``deblurstack masks CONFIG`` fills the cache ahead of training (resumable).
``predeblur: {config: <file>, checkpoint: <file>}``
    The source sees the output of that stack instead of the blurry image (the step SAM-Deblur's
    paper describes for its training masks and its code leaves out).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deblurstack.data import Pair, write_bytes_atomic
from deblurstack.errors import DeblurstackError

MaskFunction = Callable[[np.ndarray, Pair], np.ndarray]


class MaskError(DeblurstackError):
    """A map cannot be computed, read or stored."""


def encode_map(array: np.ndarray) -> tuple[str, bytes]:
    """``(suffix, bytes)``: integer maps as 8/16-bit PNG, float maps as ``.npy``."""
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
            raise MaskError(f"a label map with values {array.min()}..{array.max()} does not fit 16-bit PNG (0..65535)")
        depth = np.uint8 if array.max(initial=0) <= 255 else np.uint16
        ok, encoded = cv2.imencode(".png", array.astype(depth))
        if not ok:
            raise MaskError("cannot encode a label map as PNG")
        return ".png", encoded.tobytes()
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32), allow_pickle=False)
    return ".npy", buffer.getvalue()


def decode_map(path: Path) -> np.ndarray | None:
    """The stored map, or None when the file is missing or unreadable."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, ValueError):
        return None
    return array if array is None or array.ndim == 2 else None


class CachedSource:
    """A mask source with an on-disk cache; ``generated`` counts the maps it had to compute."""

    def __init__(self, source: MaskFunction, folder: str | Path, parameters: Mapping[str, Any]) -> None:
        self.source = source
        self.folder = Path(folder)
        self.fingerprint = json.dumps(parameters, sort_keys=True, default=str).encode()
        self.generated = 0

    def key(self, image: np.ndarray) -> str:
        digest = hashlib.sha256(self.fingerprint)
        digest.update(f"{image.shape}{image.dtype}".encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        return digest.hexdigest()

    def __call__(self, image: np.ndarray, pair: Pair) -> np.ndarray:
        key = self.key(image)
        for suffix in (".png", ".npy"):
            stored = decode_map(self.folder / key[:2] / f"{key}{suffix}")
            if stored is not None and stored.shape == image.shape[:2]:
                return stored
        try:
            computed = self.source(image, pair)
        except DeblurstackError as error:
            raise MaskError(
                f"{pair.input}: no cached map in {self.folder} and it cannot be computed here ({error}); "
                f"compute the maps with `deblurstack masks CONFIG` where the source works"
            ) from error
        self.generated += 1
        suffix, payload = encode_map(computed)
        write_bytes_atomic(self.folder / key[:2] / f"{key}{suffix}", payload)
        return computed


class PredeblurredSource:
    """Runs a trained stack on the image first and hands its output to the mask source."""

    def __init__(self, source: MaskFunction, config: str | Path, checkpoint: str | Path) -> None:
        from deblurstack.checkpoint import load_stack_weights
        from deblurstack.compose import build_stack

        self.source = source
        self.stack = build_stack(config).eval()
        load_stack_weights(self.stack, Path(checkpoint), "auto")

    def __call__(self, image: np.ndarray, pair: Pair) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).unsqueeze(0)
            sharp = self.stack(tensor).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        return self.source(np.ascontiguousarray(sharp), pair)


__all__ = [
    "CachedSource",
    "MaskError",
    "PredeblurredSource",
    "decode_map",
    "encode_map",
]
