"""Images on disk and paired samples: reading, writing, pairing by name, crops and the 8 dihedral
transforms, and the dataset base class that dataset plugins return.

Arrays are ``H x W x 3`` float32 RGB in [0, 1] (8- and 16-bit files alike); auxiliary arrays are
``H x W``: integer label maps (``masks``) or float maps in [0, 1] (``blur_mask``). A sample is
``{"name", "input", "target", **aux}`` with tensors ``3 x H x W``, label maps ``H x W`` (int64)
and float maps ``1 x H x W``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import cv2
import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from deblurstack.errors import DeblurstackError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: ``key(sample rng)``: what a training sampler hands the dataset with each index
SampleKey = tuple[int, ...]


class ImageError(DeblurstackError):
    """An image file that cannot be read or does not fit its pair."""


# ---------------------------------------------------------------------- files


def read_image(path: str | Path) -> np.ndarray:
    """``H x W x 3`` float32 RGB in [0, 1]; EXIF orientation applied, 16-bit precision kept,
    grayscale repeated to three channels and alpha dropped (both with a warning naming the file)."""
    return read_image_and_depth(path)[0]


def read_image_and_depth(path: str | Path) -> tuple[np.ndarray, int]:
    """:func:`read_image` and the file's bit depth (8 or 16)."""
    path = Path(path)
    image = _decode(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR, "image")
    _warn_if_converted(path)
    bits = 16 if image.dtype == np.uint16 else 8
    scale = np.float32(65535.0 if bits == 16 else 255.0)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32) / scale, bits


def _decode(path: Path, flags: int, what: str) -> np.ndarray:
    """The decoded file, or an :class:`ImageError` naming it (unreadable, empty, truncated, too large)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageError(f"{path}: cannot read: {error.strerror or error}") from None
    if not data.size:
        raise ImageError(f"{path}: not a readable {what} (the file is empty)")
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as error:  # e.g. a header claiming more pixels than OpenCV decodes
        reason = "too large to decode" if "CV_IO_MAX_IMAGE_PIXELS" in str(error) else one_line(error)
        raise ImageError(f"{path}: not a readable {what}: {reason}") from None
    if image is None:
        raise ImageError(f"{path}: not a readable {what} (truncated or unknown format)")
    return image


def _warn_if_converted(path: Path) -> None:
    """Warn when a grayscale image is read as RGB or an alpha channel is dropped (read from the header only)."""
    try:
        from PIL import Image

        with Image.open(path) as header:
            mode, bands = header.mode, header.getbands()
    except Exception:  # a format Pillow cannot open: OpenCV read it, nothing to tell
        return
    if "A" in bands or mode == "PA":
        warnings.warn(f"{path}: has an alpha channel, which is dropped", stacklevel=3)
    elif mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F") or bands == ("L",):
        warnings.warn(f"{path}: grayscale, read as RGB with three equal channels", stacklevel=3)


def read_map(path: str | Path) -> np.ndarray:
    """A single-channel map (mask or label image) as stored: ``H x W``, integer dtype kept."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: not a readable map (no such file)")
    image = _decode(path, cv2.IMREAD_UNCHANGED, "map")
    return image if image.ndim == 2 else image[..., 0]


def write_image(path: str | Path, image: np.ndarray, bit_depth: Literal[8, 16] = 8) -> None:
    """Write ``H x W x 3`` RGB (or ``H x W``) in [0, 1], rounded to 8 or 16 bits, atomically."""
    path = Path(path)
    peak, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    array = np.clip(np.rint(np.asarray(image, dtype=np.float64) * peak), 0, peak).astype(dtype)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix or ".png", array)
    if not ok:
        raise ImageError(f"{path}: cannot encode as {path.suffix}")
    write_bytes_atomic(path, encoded.tobytes())


@contextlib.contextmanager
def atomic_file(path: str | Path, sync: bool = True) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` whole or not at all: written beside it, renamed into place on success
    and removed on failure; ``sync`` also flushes it to the disk first (against a power cut, not only a kill). It
    gets the permissions a plain ``open`` would (0666 less the umask), not the owner-only ones of mkstemp."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (see :func:`atomic_file`), unsynced: images and reports come by the
    thousand (synth, run) and are made again in seconds, where a lost checkpoint costs a run."""
    with atomic_file(path, sync=False) as file:
        file.write(payload)


def list_images(folder: str | Path) -> list[Path]:
    """Image files in ``folder`` (not recursive), sorted by name; an empty or missing folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such folder")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise ImageError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


# ---------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class Pair:
    """Files of one sample: blurry input, sharp target, and auxiliary maps by input name."""

    name: str
    input: Path
    target: Path
    aux: Mapping[str, Path] = field(default_factory=dict)


def pair_by_name(
    input_dir: str | Path, target_dir: str | Path, aux_dirs: Mapping[str, str | Path] | None = None, prefix: str = ""
) -> list[Pair]:
    """Pairs of files with the same stem in both folders (never by listing order).

    ``aux_dirs`` maps auxiliary input names to folders holding a file of the same stem.
    """
    inputs = {p.stem: p for p in list_images(input_dir)}
    targets = {p.stem: p for p in list_images(target_dir)}
    unmatched = sorted(set(inputs) ^ set(targets))
    if unmatched:
        stem = unmatched[0]
        where = (
            f"{inputs[stem]} has no match in {target_dir}"
            if stem in inputs
            else f"{targets[stem]} has no match in {input_dir}"
        )
        raise ImageError(f"{where} ({len(unmatched)} unmatched file(s))")
    aux_files = {name: {p.stem: p for p in list_images(folder)} for name, folder in (aux_dirs or {}).items()}
    pairs = []
    for stem in sorted(inputs):
        aux = {}
        for name, files in aux_files.items():
            if stem not in files:
                raise ImageError(f"{aux_dirs[name]}: no {name} file for {inputs[stem].name}")
            aux[name] = files[stem]
        pairs.append(Pair(prefix + stem, inputs[stem], targets[stem], aux))
    return pairs


# ---------------------------------------------------------------------- geometry


def random_crop(arrays: Mapping[str, np.ndarray], size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One ``size x size`` window, the same for every array (all share H and W)."""
    height, width = next(iter(arrays.values())).shape[:2]
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return {key: value[top : top + size, left : left + size] for key, value in arrays.items()}


def dihedral(array: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 flips/rotations: bit 0 flips left-right, bit 1 up-down, bit 2 transposes H and W.

    The same code transforms images (``H x W x C``) and maps (``H x W``), so masks stay aligned
    (SAM-Deblur's loader rotates masks differently from images; see research notes).
    """
    if transform & 1:
        array = array[:, ::-1]
    if transform & 2:
        array = array[::-1]
    if transform & 4:
        array = array.swapaxes(0, 1)
    return array


def reflect_pad(array: np.ndarray, size: int) -> np.ndarray:
    """Pad H and W up to ``size`` on the bottom/right by reflection (NAFNet pads small GT crops so)."""
    pad_h, pad_w = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if not pad_h and not pad_w:
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    mode = "reflect" if pad_h < array.shape[0] and pad_w < array.shape[1] else "symmetric"
    return np.pad(array, widths, mode=mode)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """Images to ``C x H x W`` float, integer maps to ``H x W`` int64, float maps to ``1 x H x W``."""
    array = np.ascontiguousarray(array)
    if array.ndim == 3:
        return torch.from_numpy(array.transpose(2, 0, 1).copy()).float()
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(array.astype(np.int64))
    return torch.from_numpy(array.astype(np.float32)).unsqueeze(0)


# ---------------------------------------------------------------------- dataset


class PairedImageDataset(Dataset):
    """Paired images with optional random crops, dihedral augmentation and auxiliary inputs.

    Indexing with an int gives the full, untransformed sample. Training samplers index with
    ``(index, *key)``; the key seeds the crop and the transform, so a sample depends only on
    the key, never on worker processes or on when it is loaded (this is what makes resumed
    runs bit-identical).

    Args:
        pairs: the files, paired by name.
        patch_size: random square crop size; None keeps whole images.
        augment: apply one of the 8 flips/rotations at random.
        small_images: ``pad`` reflect-pads an image smaller than the patch (as NAFNet's loader);
            ``error`` raises naming the file.
        aux_sources: auxiliary input name -> mask source, a callable ``(image, pair) -> H x W array``
            run on the whole image before cropping.
        skip_bad: in training, an unreadable pair is reported once and replaced by the next one; in
            evaluation (whole samples, an int index) it still raises, and the evaluation lists it as skipped.
        cache: keep decoded pairs (and auxiliary maps) in memory after their first read; for data
            that fits in RAM, it takes image decoding out of the training step.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        patch_size: Annotated[int, Field(ge=1, le=8192)] | None = None,  # 8192^2 RGB floats: 800 MB a crop
        augment: bool = False,
        small_images: Literal["pad", "error"] = "pad",
        aux_sources: Mapping[str, Callable[[np.ndarray, Pair], np.ndarray]] | None = None,
        skip_bad: bool = False,
        cache: bool = False,
    ) -> None:
        if not pairs:
            raise ImageError("the dataset has no pairs")
        self.pairs = list(pairs)
        self.patch_size = patch_size
        self.augment = augment
        self.small_images = small_images
        self.aux_sources = dict(aux_sources or {})
        self.skip_bad = skip_bad
        self.skipped: list[str] = []
        self.cache: dict[int, dict[str, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        index, *seed = (key,) if isinstance(key, int) else key
        attempts = len(self.pairs) if seed else 1  # only training batches take another pair in a bad one's place
        for attempt in range(attempts):
            position = (index + attempt) % len(self.pairs)
            pair = self.pairs[position]
            try:
                arrays = self.load_arrays(position, tuple(seed))
                break
            except ImageError as error:
                if not self.skip_bad or not seed:
                    raise
                if str(error) not in self.skipped:
                    self.skipped.append(str(error))
        else:
            raise ImageError("every pair of the dataset failed to load")
        if seed:
            arrays = self.transform(arrays, np.random.default_rng([*seed, index]), pair)
        return {"name": pair.name, **{k: to_tensor(v) for k, v in arrays.items()}}

    def load_arrays(self, position: int, key: SampleKey = ()) -> dict[str, np.ndarray]:
        """The whole-image arrays of pair ``position``, before any crop: :meth:`load`, kept in memory with ``cache``.

        ``key`` is the rest of a training key, ``(seed, epoch)``, and empty for an int index. This is the step a
        dataset that makes its samples on the fly overrides (``synthesized`` draws its pair from the key here);
        the crop and the flips that follow stay the same.
        """
        if self.cache is not None and position in self.cache:
            return self.cache[position]
        arrays = self.load(self.pairs[position])
        if self.cache is not None:
            self.cache[position] = arrays  # the transforms return new arrays or views, never edit these
        return arrays

    def load(self, pair: Pair) -> dict[str, np.ndarray]:
        """Read one pair with its auxiliary maps; sizes must agree."""
        arrays = {"input": read_image(pair.input), "target": read_image(pair.target)}
        if arrays["input"].shape != arrays["target"].shape:
            raise ImageError(f"{pair.input} is {_size(arrays['input'])} but {pair.target} is {_size(arrays['target'])}")
        for name, path in pair.aux.items():
            arrays[name] = read_map(path)
            if name == "blur_mask" and arrays[name].dtype != np.float32:  # stored as 0/255 images
                arrays[name] = (arrays[name] > 0).astype(np.float32)
        for name, source in self.aux_sources.items():
            arrays[name] = source(arrays["input"], pair)
        for name, value in arrays.items():
            if value.shape[:2] != arrays["input"].shape[:2]:
                raise ImageError(
                    f"{pair.aux.get(name, name)}: {name} is {_size(value)} but {pair.input} is {_size(arrays['input'])}"
                )
        return arrays

    def transform(self, arrays: dict[str, np.ndarray], rng: np.random.Generator, pair: Pair) -> dict[str, np.ndarray]:
        """Crop (padding small images) and augment every array alike."""
        if self.patch_size:
            height, width = arrays["input"].shape[:2]
            if min(height, width) < self.patch_size:
                if self.small_images == "error":
                    raise ImageError(f"{pair.input} is {width}x{height}, smaller than patch_size {self.patch_size}")
                arrays = {k: reflect_pad(v, self.patch_size) for k, v in arrays.items()}
            arrays = random_crop(arrays, self.patch_size, rng)
        if self.augment:
            transform = int(rng.integers(0, 8))
            arrays = {k: dihedral(v, transform) for k, v in arrays.items()}
        return arrays


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


# ---------------------------------------------------------------------- sampling


class TrainingSampler(torch.utils.data.Sampler):
    """Endless shuffled indices for iteration-based training, resumable from any position.

    Position ``p`` (samples drawn by this rank) falls in epoch ``p // per_rank``; each epoch is a
    permutation seeded by ``(seed, epoch)``, padded to a multiple of ``world_size`` and dealt
    round-robin to ranks. Yields ``(index, seed, epoch)`` keys for :class:`PairedImageDataset`.
    Two ranks with batch ``b`` see exactly the samples one process with batch ``2b`` sees.
    """

    def __init__(self, length: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        self.length, self.seed, self.rank, self.world_size, self.start = length, seed, rank, world_size, start
        self.per_rank = -(-length // world_size)

    def __iter__(self) -> Iterator[SampleKey]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.per_rank)
            order = self.permutation(epoch)[self.rank :: self.world_size]
            for index in order[offset:]:
                yield (int(index), self.seed, epoch)
            position = (epoch + 1) * self.per_rank

    def permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        return order + order[: self.per_rank * self.world_size - self.length]


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageError",
    "Pair",
    "PairedImageDataset",
    "TrainingSampler",
    "atomic_file",
    "dihedral",
    "list_images",
    "pair_by_name",
    "random_crop",
    "read_image",
    "read_image_and_depth",
    "read_map",
    "reflect_pad",
    "to_tensor",
    "write_bytes_atomic",
    "write_image",
]
