"""A dataset that makes its blurry/sharp pairs while it is read: a synthesizer node run on sharp photos,
with a new pair every epoch (BladeNet's local blur synthesis, Blur2Blur's known-blur pairs).

Loading, crops, flips, small-image padding, ``skip_bad`` and mask sources come from
:class:`deblurstack.data.PairedImageDataset`; this module only replaces its loading step
(:meth:`~deblurstack.data.PairedImageDataset.load_arrays`) by synthesis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, Field, ValidationInfo

from deblurstack.compose import nested_node, node_provides
from deblurstack.data import Pair, PairedImageDataset, list_images, read_image
from deblurstack.engine.prepare import EMBEDDED, EMBEDDED_PHOTOS, PhotoName, embedded_photos, limit_side

#: the rest of a training key after the index: ``(run_seed, epoch)``; empty for an int index
Key = tuple[int, ...]


def _sharp_source(value: str, info: ValidationInfo) -> str:
    """``skimage`` (the bundled photos) or a folder that exists when the config is checked."""
    if value != EMBEDDED and (info.context or {}).get("paths", True) and not Path(value).is_dir():
        raise ValueError(f"no such folder: {value} (or 'skimage' for the photos scikit-image ships)")
    return value


def _one_frame(resolved: Any) -> Any:
    """A synthesizer node that makes a pair from one image (the dataset has one sharp photo per pair)."""
    count = resolved.record.frame_count(resolved.params)
    if count != 1:
        raise ValueError(
            f"synthesizer {resolved.type!r} takes {count} frames; the synthesized dataset makes each pair from "
            "one image"
        )
    return resolved


def _synthesizer_node(node: Any) -> dict[str, Any]:
    """A synthesizer node of one frame, checked like any node and built once (so that what only its factory checks
    is refused too, e.g. motion_blur's ``max_length`` above ``kernel_size - 1``); its explicit form."""
    return _one_frame(nested_node("synthesizer", node, build=True)).to_dict()


#: a folder of sharp images, or ``skimage``
SharpSource = Annotated[str, AfterValidator(_sharp_source)]
#: a synthesizer node of one frame (``{type: motion_blur, max_length: 12.0}``)
SynthesizerNode = Annotated[dict[str, Any], AfterValidator(_synthesizer_node)]
#: side of the square random crop (as the other datasets: 8192^2 RGB floats is 800 MB a crop)
PatchSize = Annotated[int, Field(ge=1, le=8192)]
#: a longest side or a window side in pixels
Side = Annotated[int, Field(ge=1, le=65536)]


class Synthesized(PairedImageDataset):
    """Blurry/sharp pairs made while training: ``synthesizer`` run on each sharp photo, a new pair every epoch.

    Sample ``i`` is variant ``k = i % pairs_per_image`` of photo ``p = i // pairs_per_image`` (sorted by
    file name; the bundled photos in the order of ``photos``), so an epoch has ``photos x pairs_per_image``
    samples. The synthesizer makes the pair from the whole sharp photo (or a ``window`` of it) with
    the random generator ``numpy.random.default_rng(entropy)``:

    - training samples (the sampler's key ``(i, run_seed, epoch)``): entropy ``[seed, p, k, run_seed, epoch]``,
      so every epoch and every run seed has its own pairs, and a sample depends only on its key (resumed and
      multi-worker runs stay bit-identical); with ``fixed: true``, ``[seed, p, k]`` in every epoch.
    - whole samples (an int index: evaluation, validation, ``deblurstack masks``): always ``[seed, p, k]``, the
      pair ``deblurstack synth <source> --seed <seed> --per-image <pairs_per_image>`` writes (before its 8-bit
      rounding), so validation and test splits score the same pairs every time.

    Then, as in every dataset, ``aux`` mask sources run on the blurry image, and training samples get the
    random crop and flip of :class:`~deblurstack.data.PairedImageDataset`, seeded by the key as there, applied
    alike to the images and to the synthesizer's auxiliary maps (its record's ``provides``, e.g. a
    ``blur_mask``; the config check counts them as inputs this dataset provides). Other outputs are dropped.

    Args:
        sharp_dir: folder of sharp images (not recursive), or ``skimage`` for the photos scikit-image ships
            and matplotlib's portrait ``grace_hopper`` (no download; choose them with ``photos``).
        synthesizer: a synthesizer node of one frame, e.g. ``{type: motion_blur, max_length: 12.0}``,
            checked like any node (each problem names its key).
        photos: which bundled photos, with ``sharp_dir: skimage`` only (default: the 11 of ``EMBEDDED_PHOTOS``;
            ``EXTRA_PHOTOS`` are there to choose, and the synthetic ``dead_leaves_<k>``).
        max_side: shrink photos whose longer side exceeds this (area interpolation) before synthesis; unset keeps
            their size.
        window: make each pair from a random ``window x window`` crop of the photo (drawn from the pair's
            generator) instead of the whole photo, for speed at large photos: at 1280 x 720 motion blur or a camera
            sweep takes 70-90 ms per pair on one CPU core, a 384 window about a sixth of that. The window is
            treated as the image, its borders as the synthesizer treats image borders; a photo smaller than the
            window is used whole. At least ``patch_size``; unset: the whole photo. Whole samples (evaluation) are
            windowed too, so leave it unset on validation and test splits.
        pairs_per_image: samples per photo and epoch (each its own pair).
        fixed: training samples also use the index-only pairs, the same in every epoch (only crops and flips
            change): a fixed synthetic set without writing it to disk.
        seed: mixed into every pair's generator: splits over the same photos with different seeds get different
            pairs.
        patch_size: random square crop of training samples; unset keeps whole images.
        augment: apply one of the 8 flips/rotations to training samples.
        small_images: ``pad`` reflect-pads a pair smaller than the patch; ``error`` raises naming the photo.
        aux_sources: set by the builder from the node's ``aux`` (mask sources run on each synthesized blurry
            image; a mask cache then keeps one map per pair made, so leave ``cache`` off there).
        skip_bad: in training, an unreadable photo is reported once and replaced by the next one.
        cache: keep the decoded (and shrunk) sharp photos in memory, one copy per loader worker; the pairs are
            made anew every time.
    """

    def __init__(
        self,
        sharp_dir: SharpSource,
        synthesizer: SynthesizerNode,
        photos: Annotated[tuple[PhotoName, ...], Field(min_length=1)] | None = None,
        max_side: Side | None = None,
        window: Side | None = None,
        pairs_per_image: Annotated[int, Field(ge=1, le=1_000_000)] = 1,
        fixed: bool = False,
        seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0,
        patch_size: PatchSize | None = None,
        augment: bool = False,
        small_images: Literal["pad", "error"] = "pad",
        aux_sources: Any = None,
        skip_bad: bool = False,
        cache: bool = False,
    ) -> None:
        if photos is not None and sharp_dir != EMBEDDED:
            raise ValueError(f"photos chooses among the bundled photos; it needs sharp_dir: {EMBEDDED}")
        if window is not None and patch_size is not None and window < patch_size:
            raise ValueError(f"window {window} is smaller than patch_size {patch_size}")
        resolved = _one_frame(nested_node("synthesizer", dict(synthesizer)))
        self.node, self.synthesizer = resolved.to_dict(), resolved.build()
        self.provides = node_provides(resolved)
        if sharp_dir == EMBEDDED:
            self.photos: list[tuple[str, Path | None]] = [
                (name, None) for name in (EMBEDDED_PHOTOS if photos is None else photos)
            ]
        else:
            self.photos = [(path.stem, path) for path in list_images(sharp_dir)]
        self.max_side, self.window, self.pairs_per_image = max_side, window, pairs_per_image
        self.fixed, self.seed = fixed, seed
        pairs = []
        for name, path in self.photos:
            where = path or Path(EMBEDDED) / name
            for variant in range(pairs_per_image):
                pairs.append(Pair(f"{name}_{variant}" if pairs_per_image > 1 else name, where, where))
        super().__init__(pairs, patch_size, augment, small_images, aux_sources, skip_bad, cache=False)
        self.sharp_cache: dict[int, np.ndarray] | None = {} if cache else None

    @staticmethod
    def provided_inputs(params: dict[str, Any]) -> tuple[str, ...]:
        """The inputs the config check counts as this dataset's besides its record's: what its synthesizer provides
        (``deblurstack.compose.node_provides`` calls this with the checked parameters)."""
        from deblurstack.compose import resolve_node

        return node_provides(resolve_node("synthesizer", params["synthesizer"]))

    def sharp(self, photo: int) -> np.ndarray:
        """Photo number ``photo``, ``H x W x 3`` float32 RGB in [0, 1], shrunk to ``max_side``."""
        if self.sharp_cache is not None and photo in self.sharp_cache:
            return self.sharp_cache[photo]
        name, path = self.photos[photo]
        if path is None:
            image = embedded_photos(self.max_side, [name])[name]
        else:
            image = limit_side(read_image(path), self.max_side)
        if self.sharp_cache is not None:
            self.sharp_cache[photo] = image  # the synthesizers make new arrays, never edit their frames
        return image

    def generator(self, position: int, key: Key = ()) -> np.random.Generator:
        """The generator pair ``position`` is made with: see the class docstring."""
        photo, variant = divmod(position, self.pairs_per_image)
        entropy = [self.seed, photo, variant] + ([] if self.fixed else [int(k) for k in key])
        return np.random.default_rng(entropy)

    def load_arrays(self, position: int, key: Key = ()) -> dict[str, np.ndarray]:
        """The pair of sample ``position`` for ``key`` (``(run_seed, epoch)``; empty for an int index), uncropped."""
        rng = self.generator(position, key)
        sharp = self.sharp(position // self.pairs_per_image)
        if self.window is not None:
            sharp = _window(sharp, self.window, rng)
        return self.make(sharp, rng, self.pairs[position])

    def load(self, pair: Pair) -> dict[str, np.ndarray]:
        """The whole sample of ``pair`` (its index-only pair), as an int index gives it."""
        return self.load_arrays(self.pairs.index(pair))

    def make(self, sharp: np.ndarray, rng: np.random.Generator, pair: Pair) -> dict[str, np.ndarray]:
        """The synthesizer's pair of ``sharp`` with its auxiliary maps, then the mask sources' maps."""
        made = self.synthesizer([sharp], rng)
        missing = [key for key in ("input", "target", *self.provides) if key not in made]
        if missing:
            raise ValueError(f"synthesizer {self.node['type']!r} returned no {', '.join(missing)} for {pair.name}")
        arrays = {key: np.asarray(made[key]) for key in ("input", "target", *self.provides)}
        for name, source in self.aux_sources.items():
            arrays[name] = source(arrays["input"], pair)
        for name, value in arrays.items():
            if value.shape[:2] != sharp.shape[:2]:
                raise ValueError(
                    f"synthesizer {self.node['type']!r}: {name} of {pair.name} is {value.shape[1]}x{value.shape[0]}, "
                    f"but the sharp image is {sharp.shape[1]}x{sharp.shape[0]}"
                )
        return arrays


def _window(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``side x side`` crop (each side at most the image's), drawn from ``rng``."""
    height, width = image.shape[:2]
    crop_h, crop_w = min(side, height), min(side, width)
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return image[top : top + crop_h, left : left + crop_w]


__all__ = ["Synthesized"]
