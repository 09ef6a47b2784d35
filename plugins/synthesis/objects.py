"""Where the local blur synthesis (``lbs``) gets its objects: cut-outs with an alpha channel.

Three sources, each a list of source images, each image holding zero or more objects:

- :class:`VocObjects`: a PASCAL VOC 2012 folder (``JPEGImages/*.jpg`` and the instance maps
  ``SegmentationObject/*.png``), one object per instance, as LODE's official generator uses;
- :class:`RgbaObjects`: a folder of RGBA cut-outs, one object per file (its alpha > 0);
- :class:`PhotoSegments`: objects cut from ordinary photos by a classical segmentation
  (Felzenszwalb-Huttenlocher or SLIC from scikit-image), keeping the segments of a given size and
  solidity; by default from the photos scikit-image ships, so nothing has to be downloaded.

A cut-out is an ``h x w x 4`` uint8 RGBA array, tightly cropped, whose colour is 0 where its alpha is
0 (the official code multiplies the image by the instance mask). Images are read and cut (segmented)
on first use and kept in a process-wide cache of the last :data:`CACHE_SIZE` images, keyed by the
file, its modification time and the settings, so a synthesizer built twice segments its photos once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from deblurstack.data import ImageError, list_images, read_image

#: source images whose objects are kept in memory (per process, all sources together)
CACHE_SIZE = 256
#: VOC's "void" label around every object: palette index 255, read as grayscale 220 by OpenCV
VOC_VOID_INDEX, VOC_VOID_GRAY, VOC_VOID_RGB = 255, 220, (224, 224, 192)
#: Felzenszwalb-Huttenlocher merge threshold and smoothing at the segmentation size
FELZENSZWALB_SCALE, FELZENSZWALB_SIGMA = 300.0, 0.8
#: SLIC superpixels per photo and their compactness
SLIC_SEGMENTS, SLIC_COMPACTNESS = 30, 10.0

Segmenter = Literal["felzenszwalb", "slic"]


@dataclass(frozen=True)
class Found:
    """What one source image gave: its usable cut-outs and what was looked at, for error messages.

    Attributes:
        objects: the usable cut-outs (``h x w x 4`` uint8 RGBA, read-only).
        sizes: pixel count (alpha > 0) of every candidate object, usable or not.
        fractions: segments only: share of the photo's area of every segment.
        solidities: segments only: area / convex-hull area of the segments whose size was in range.
    """

    objects: tuple[np.ndarray, ...]
    sizes: tuple[int, ...] = ()
    fractions: tuple[float, ...] = ()
    solidities: tuple[float, ...] = ()


def tight_crop(rgba: np.ndarray, quirks: bool = False) -> np.ndarray:
    """``rgba`` cropped to its object, with the colour set to 0 where the alpha is 0.

    Without ``quirks``: the bounding box of alpha > 0. With ``quirks`` (LODE's official code): every
    row and column whose colour is 0 throughout is deleted, also inside the object (an all-black row
    of a dark object is cut out of it).
    """
    rgba = rgba.copy()
    rgba[rgba[..., 3] == 0, :3] = 0
    present = rgba[..., :3].any(axis=2) if quirks else rgba[..., 3] > 0
    rows, cols = present.any(axis=1), present.any(axis=0)
    if quirks:
        return np.ascontiguousarray(rgba[rows][:, cols])
    if not rows.any():
        return rgba[:0, :0]
    top, bottom = np.flatnonzero(rows)[[0, -1]]
    left, right = np.flatnonzero(cols)[[0, -1]]
    return np.ascontiguousarray(rgba[top : bottom + 1, left : right + 1])


def _found(cutouts: Sequence[np.ndarray], min_pixels: int, **extra: tuple) -> Found:
    sizes = tuple(int(np.count_nonzero(c[..., 3])) for c in cutouts)
    usable = []
    for cutout, size in zip(cutouts, sizes, strict=True):
        if size >= min_pixels:
            cutout.setflags(write=False)
            usable.append(cutout)
    return Found(tuple(usable), sizes, **extra)


def _stamp(path: Path) -> int:
    """The file's modification time, part of the cache key (an edited file is read again)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _cut(rgb: np.ndarray, mask: np.ndarray, quirks: bool) -> np.ndarray:
    """The tight cut-out of ``rgb`` (uint8) where ``mask`` (bool) is set: alpha 255 inside, 0 outside."""
    rgba = np.concatenate([rgb, np.where(mask, 255, 0).astype(np.uint8)[..., None]], axis=2)
    return tight_crop(rgba, quirks)


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


def _range(values: Sequence[float], unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
    if not values:
        return "none"
    low, high = min(values) * scale, max(values) * scale
    return f"{low:.{digits}f}{unit}..{high:.{digits}f}{unit}"


class ObjectSource:
    """A list of source images, each giving its cut-outs on :meth:`load` (cached)."""

    #: the source in words, for messages ("VOC folder /data/VOC2012")
    description: str = "objects"

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Found:
        """The cut-outs of source image ``index``."""
        raise NotImplementedError

    def explain(self) -> str:
        """Why no image gave a usable object: the counts and sizes found (reads every image)."""
        founds = [self.load(i) for i in range(len(self))]
        sizes = [size for found in founds for size in found.sizes]
        return (
            f"no usable object in {self.description}: {len(founds)} image(s), {len(sizes)} candidate object(s) "
            f"of {_range(sizes, ' px')}, none of at least min_object_pixels={self.min_pixels} px"
        )

    min_pixels: int = 1


def draw_objects(source: ObjectSource, rng: np.random.Generator, images: int, max_instances: int) -> list[np.ndarray]:
    """Cut-outs of ``images`` distinct source images drawn at random, 1 to ``max_instances`` of each.

    As LODE's generator does: the images are drawn without replacement (images without a usable
    object are passed over), then each gives ``K`` of its objects, ``K`` uniform in
    ``1..min(objects, max_instances)``, chosen at random. Raises :class:`ImageError` saying what was
    found when no image of the source has a usable object.
    """
    if images <= 0:
        return []
    chosen: list[np.ndarray] = []
    taken = 0
    for index in rng.permutation(len(source)):
        objects = source.load(int(index)).objects
        if not objects:
            continue
        count = int(rng.integers(1, min(len(objects), max_instances) + 1))
        chosen += [objects[i] for i in rng.permutation(len(objects))[:count]]
        taken += 1
        if taken == images:
            break
    if not chosen:
        raise ImageError(f"lbs: {source.explain()}")
    return chosen


# ---------------------------------------------------------------------- PASCAL VOC


def read_instance_map(path: str | Path, quirks: bool = False) -> tuple[np.ndarray, list[int]]:
    """A VOC ``SegmentationObject`` PNG as ``(ids, instance ids)``; background and void are not instances.

    Without ``quirks`` the palette indices are read (0 background, 255 void). With ``quirks`` the
    PNG is read as grayscale by OpenCV, as LODE's code does: the palette colours become gray levels
    (0 background, 220 void), and two instances whose colours have the same gray level merge into one
    (VOC indices 2 and 17 are both 75).
    """
    path = Path(path)
    if quirks:
        ids = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        if ids is None:
            raise ImageError(f"{path}: not a readable instance map")
        excluded = {0, VOC_VOID_GRAY}
    else:
        from PIL import Image

        try:
            with Image.open(path) as png:
                mode, array = png.mode, np.array(png)
        except OSError as error:
            raise ImageError(f"{path}: not a readable instance map ({error})") from None
        if mode in ("RGB", "RGBA"):  # a colour PNG: one id per colour
            rgb = array[..., :3].astype(np.int64)
            ids = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            red, green, blue = VOC_VOID_RGB
            excluded = {0, (red << 16) | (green << 8) | blue}
        else:  # palette ("P") or gray indices
            ids = array[..., 0] if array.ndim == 3 else array
            excluded = {0, VOC_VOID_INDEX}
    return ids, [int(i) for i in np.unique(ids) if int(i) not in excluded]


@functools.lru_cache(maxsize=CACHE_SIZE)
def _voc_image(png: str, jpg: str, stamps: tuple[int, int], quirks: bool, min_pixels: int) -> Found:
    ids, instances = read_instance_map(png, quirks)
    if not Path(jpg).is_file():
        raise ImageError(f"{png}: no image {jpg} for this instance map")
    rgb = _as_uint8(read_image(jpg))
    if rgb.shape[:2] != ids.shape[:2]:
        raise ImageError(f"{png} is {_size(ids)} but its image {jpg} is {_size(rgb)}")
    return _found([_cut(rgb, ids == i, quirks) for i in instances], min_pixels)


class VocObjects(ObjectSource):
    """The instances of a PASCAL VOC 2012 folder: ``SegmentationObject/<id>.png`` with ``JPEGImages/<id>.jpg``.

    Args:
        root: the ``VOC2012`` folder (holding ``JPEGImages`` and ``SegmentationObject``).
        quirks: read the instance PNGs as grayscale (gray 0 and 220 excluded) and crop as LODE's code does.
        min_pixels: the fewest pixels an instance needs to be used.
    """

    def __init__(self, root: str | Path, quirks: bool = False, min_pixels: int = 1) -> None:
        root = Path(root)
        labels, images = root / "SegmentationObject", root / "JPEGImages"
        if not labels.is_dir():
            raise ImageError(
                f"{root}: no SegmentationObject folder (where a PASCAL VOC 2012 folder has its instance maps)"
            )
        if not images.is_dir():
            raise ImageError(f"{root}: no JPEGImages folder (a PASCAL VOC 2012 folder has the photos there)")
        self.labels = sorted(p for p in labels.iterdir() if p.suffix.lower() == ".png" and p.is_file())
        if not self.labels:
            raise ImageError(f"{labels}: no instance maps (*.png)")
        self.images, self.quirks, self.min_pixels = images, quirks, min_pixels
        self.description = f"VOC folder {root}"

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Found:
        png = self.labels[index]
        jpg = self.images / f"{png.stem}.jpg"
        return _voc_image(str(png), str(jpg), (_stamp(png), _stamp(jpg)), self.quirks, self.min_pixels)


# ---------------------------------------------------------------------- RGBA cut-outs


@functools.lru_cache(maxsize=CACHE_SIZE)
def _rgba_file(path: str, stamp: int, quirks: bool, min_pixels: int) -> Found:
    from PIL import Image

    try:
        with Image.open(path) as image:
            has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
            rgba = np.array(image.convert("RGBA"))
    except OSError as error:
        raise ImageError(f"{path}: not a readable image ({error})") from None
    if not has_alpha:
        raise ImageError(f"{path}: no alpha channel (an RGBA cut-out is transparent outside its object)")
    return _found([tight_crop(rgba, quirks)], min_pixels)


class RgbaObjects(ObjectSource):
    """A folder of RGBA cut-outs (PNG with alpha), one object per file: where its alpha is above 0.

    Args:
        folder: the folder of cut-outs.
        quirks: crop as LODE's code does (delete every all-black row and column).
        min_pixels: the fewest pixels (alpha > 0) a cut-out needs to be used.
    """

    def __init__(self, folder: str | Path, quirks: bool = False, min_pixels: int = 1) -> None:
        self.files = list_images(folder)
        self.quirks, self.min_pixels = quirks, min_pixels
        self.description = f"RGBA folder {folder}"

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Found:
        path = self.files[index]
        return _rgba_file(str(path), _stamp(path), self.quirks, self.min_pixels)


# ---------------------------------------------------------------------- segments of photos


def segment_photo(
    photo: np.ndarray,
    segmenter: Segmenter = "felzenszwalb",
    area: tuple[float, float] = (0.01, 0.25),
    min_solidity: float = 0.7,
    side: int = 256,
    quirks: bool = False,
    min_pixels: int = 1,
) -> Found:
    """Objects cut from ``photo`` (``H x W x 3`` float in [0, 1]) along a classical segmentation.

    The photo is segmented at ``side`` pixels (longer side; smaller photos as they are); a segment
    is kept when its share of the photo's area is within ``area`` and its solidity (area / area of
    its convex hull) is at least ``min_solidity``. Its mask is scaled back to the photo's size
    (bilinear, then halved), and the object is cut from the photo at full resolution.
    """
    from skimage.measure import regionprops
    from skimage.segmentation import felzenszwalb, slic

    height, width = photo.shape[:2]
    factor = min(1.0, side / max(height, width))
    work = photo
    if factor < 1:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        work = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    pixels = work.shape[0] * work.shape[1]
    if segmenter == "felzenszwalb":
        min_size = max(10, int(0.1 * area[0] * pixels))
        labels = felzenszwalb(
            work, scale=FELZENSZWALB_SCALE, sigma=FELZENSZWALB_SIGMA, min_size=min_size, channel_axis=-1
        )
    else:
        labels = slic(work, n_segments=SLIC_SEGMENTS, compactness=SLIC_COMPACTNESS, start_label=0, channel_axis=-1)
    fractions = np.bincount(labels.ravel()) / pixels
    in_range = np.flatnonzero((fractions >= area[0]) & (fractions <= area[1]))
    relabel = np.zeros(len(fractions), np.int32)
    relabel[in_range] = np.arange(1, len(in_range) + 1)
    regions = regionprops(relabel[labels]) if len(in_range) else []
    solidities = [float(region.solidity) for region in regions]
    rgb = _as_uint8(photo)
    cutouts = []
    for region, solidity in zip(regions, solidities, strict=True):
        if solidity < min_solidity:
            continue
        mask = (labels == in_range[region.label - 1]).astype(np.float32)
        if factor < 1:
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
        cutouts.append(_cut(rgb, mask >= 0.5, quirks))
    found = _found(cutouts, min_pixels)
    return Found(found.objects, found.sizes, tuple(float(f) for f in fractions), tuple(solidities))


@functools.lru_cache(maxsize=CACHE_SIZE)
def _segments(photo: str, stamp: int, settings: tuple) -> Found:
    if stamp == -2:  # a photo scikit-image ships
        from deblurstack.engine.prepare import embedded_photos

        image = embedded_photos(512, names=[photo])[photo]
    else:
        image = read_image(photo)
    return segment_photo(image, *settings)


class PhotoSegments(ObjectSource):
    """Objects cut from photos by a classical segmentation (:func:`segment_photo`), weight-free.

    Args:
        folder: a folder of photos; None uses the photos scikit-image ships (``names`` of them, at
            most 512 px, as ``deblurstack synth skimage`` does).
        names: the scikit-image photos to cut objects from (when ``folder`` is None).
        segmenter: ``felzenszwalb`` (segments follow colour edges) or ``slic`` (compact superpixels).
        area: range of a segment's share of its photo's area for it to be used.
        min_solidity: the lowest area / convex-hull area of a used segment (1: convex).
        side: longer side in pixels the photos are segmented at (smaller is faster, coarser).
        quirks: crop as LODE's code does (delete every all-black row and column).
        min_pixels: the fewest pixels a cut-out needs to be used.
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        names: Sequence[str] | None = None,
        segmenter: Segmenter = "felzenszwalb",
        area: tuple[float, float] = (0.01, 0.25),
        min_solidity: float = 0.7,
        side: int = 256,
        quirks: bool = False,
        min_pixels: int = 1,
    ) -> None:
        if folder is None:
            from deblurstack.engine.prepare import EMBEDDED_PHOTOS

            self.photos = [(name, -2) for name in (names or EMBEDDED_PHOTOS)]
            self.description = f"the segments of scikit-image's photos ({', '.join(n for n, _ in self.photos)})"
        else:
            self.photos = [(str(path), _stamp(path)) for path in list_images(folder)]
            self.description = f"the segments of the photos in {folder}"
        self.settings = (segmenter, tuple(area), min_solidity, side, quirks, min_pixels)
        self.min_pixels = min_pixels

    def __len__(self) -> int:
        return len(self.photos)

    def load(self, index: int) -> Found:
        photo, stamp = self.photos[index]
        return _segments(photo, stamp, self.settings)

    def explain(self) -> str:
        founds = [self.load(i) for i in range(len(self))]
        segmenter, (low, high), min_solidity, side = self.settings[:4]
        fractions = [f for found in founds for f in found.fractions]
        solidities = [s for found in founds for s in found.solidities]
        sizes = [s for found in founds for s in found.sizes]
        return (
            f"no usable object in {self.description}: {len(founds)} photo(s) segmented ({segmenter} at {side} px) "
            f"into {len(fractions)} segments of {_range(fractions, '%', 100, 1)} of their photo; "
            f"{len(solidities)} within segment_area [{100 * low:g}%, {100 * high:g}%], of solidity "
            f"{_range(solidities, digits=2)} (min_solidity {min_solidity:g}); {len(sizes)} solid enough, of "
            f"{_range(sizes, ' px')} (min_object_pixels {self.min_pixels})"
        )


__all__ = [
    "CACHE_SIZE",
    "Found",
    "ObjectSource",
    "PhotoSegments",
    "RgbaObjects",
    "VocObjects",
    "draw_objects",
    "read_instance_map",
    "segment_photo",
    "tight_crop",
]
