"""Blur2Blur's unpaired training data: blurry and sharp images of the unknown domain, and known blurry/sharp pairs.

Every sample has four images (``data/unaligned_dataset.py`` of VinAIResearch/Blur2Blur):

- ``input``: an unknown-domain blurry image (official ``A``), the translator's input;
- ``sharp``: an unknown-domain sharp image (``B``), drawn at random: what known-blur generation blurs;
- ``known_blur`` / ``known_sharp``: a known-domain pair (``C``/``D``), drawn at random, the same crop of both:
  the blur the ``kernel_wizard`` generator transfers, or the ``known_images`` themselves.

**Disjoint content.** When A and B come from one paired set (the same scenes blurry and sharp), the split keeps the
first ``split`` fraction of the blurry images (sorted by name) and the last ``1 - split`` of the sharp ones, as the
official ``--ratio 0.6`` does, so no scene is seen both blurry and sharp; a warning counts names the two parts share.

**Deliberate differences from the official loader.** Known pairs are paired by file name (officially by sorted
index, which silently mispairs a folder with one file missing) and drawn from all of them (officially ``C[iB]``,
the first |B| pairs only). Both transforms are as official by default (A and B: the shorter side resized to
``load_size`` with bicubic interpolation, a random ``patch_size`` crop and a random horizontal flip; C and D: one
shared crop at their native resolution, no flip), and ``known_load_size`` resizes the known pairs too, since the
scale mismatch of native-resolution known crops changes the blur size the discriminator sees (pitfall 3).

A sample depends only on its key ``(index, run_seed, epoch)``, so resumed runs see the same images.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import Field
from torch.utils.data import Dataset

from deblurstack import ExistingFolder, ImageError
from deblurstack.compose import ComponentNode, as_node, resolve_node
from deblurstack.data import list_images, pair_by_name, random_crop, read_image, reflect_pad, to_tensor

#: share of the unknown domain's (sorted) images given to the blurry role; the rest of the sharp ones are B
Split = Annotated[float, Field(gt=0.0, lt=1.0)] | None
Side = Annotated[int, Field(ge=16, le=8192)]


class UnpairedDomains(Dataset):
    """The sampling and transforms shared by both layouts; subclasses say where each role's images come from.

    Subclasses set ``blurry_names``, ``sharp_names`` (the unknown domain's images, sorted) and ``known_names``
    (possibly empty), and define :meth:`blurry`, :meth:`sharp` and :meth:`known`.
    """

    blurry_names: list[str]
    sharp_names: list[str]
    known_names: list[str]

    def __init__(
        self,
        split: Split,
        patch_size: Side | None,
        load_size: Side | None,
        known_load_size: Side | None,
        flip: bool,
        where: str,
    ) -> None:
        if patch_size is not None and load_size is not None and load_size < patch_size:
            raise ValueError(f"load_size {load_size} is smaller than patch_size {patch_size}")
        self.patch_size, self.load_size, self.known_load_size, self.flip = patch_size, load_size, known_load_size, flip
        blurry, sharp = range(len(self.blurry_names)), range(len(self.sharp_names))
        if split is not None:  # one cut each (official: the first int(0.6 |A|) and the last int(0.4 |B|))
            blurry = blurry[: int(split * len(blurry))]
            sharp = sharp[int(split * len(sharp)) :]
        self.blurry_positions, self.sharp_positions = list(blurry), list(sharp)
        for role, positions in (("blurry", self.blurry_positions), ("sharp", self.sharp_positions)):
            if not positions:
                raise ImageError(f"{where}: no {role} images of the unknown domain after the split {split}")
        shared = {self.blurry_names[i] for i in blurry} & {self.sharp_names[i] for i in sharp}
        if shared:
            warnings.warn(
                f"{where}: {len(shared)} image name(s) are among both the blurry and the sharp images of the unknown "
                f"domain (e.g. {sorted(shared)[0]}): the translator may see the same scenes blurry and sharp",
                stacklevel=2,
            )

    # the roles' whole images, H x W x 3 float32 RGB; ``key`` is the rest of a training key (empty: fixed)
    def blurry(self, position: int, key: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def sharp(self, position: int, key: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def known(self, position: int, key: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __len__(self) -> int:
        return max(len(self.blurry_positions), len(self.sharp_positions))

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index, *rest = (key,) if isinstance(key, int) else key
        rng = np.random.default_rng([*rest, index])
        blurry = self.blurry_positions[index % len(self.blurry_positions)]
        sharp = self.sharp_positions[int(rng.integers(len(self.sharp_positions)))]
        sample = {
            "name": self.blurry_names[blurry],
            "input": self.unknown_view(self.blurry(blurry, tuple(rest)), rng),
            "sharp": self.unknown_view(self.sharp(sharp, tuple(rest)), rng),
        }
        if self.known_names:
            known_blur, known_sharp = self.known(int(rng.integers(len(self.known_names))), tuple(rest))
            sample["known_blur"], sample["known_sharp"] = self.known_view(known_blur, known_sharp, rng)
        return {k: v if k == "name" else to_tensor(v) for k, v in sample.items()}

    def unknown_view(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Shorter side to ``load_size`` (bicubic), a random crop, a random horizontal flip."""
        image = self._crop({"x": shorter_side(image, self.load_size)}, rng)["x"]
        return image[:, ::-1] if self.flip and rng.random() < 0.5 else image

    def known_view(self, blur: np.ndarray, sharp: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """One crop of both (at native resolution unless ``known_load_size``), no flip."""
        if blur.shape != sharp.shape:
            sizes = f"{blur.shape[1]}x{blur.shape[0]} and {sharp.shape[1]}x{sharp.shape[0]}"
            raise ImageError(f"a known pair has sizes {sizes}")
        cropped = self._crop({k: shorter_side(v, self.known_load_size) for k, v in (("b", blur), ("s", sharp))}, rng)
        return cropped["b"], cropped["s"]

    def _crop(self, arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One random ``patch_size`` crop of every array (reflect-padding small ones first); none if unset."""
        if self.patch_size is None:
            return arrays
        size = self.patch_size
        return random_crop(
            {k: v if min(v.shape[:2]) >= size else reflect_pad(v, size) for k, v in arrays.items()}, size, rng
        )


def shorter_side(image: np.ndarray, side: int | None) -> np.ndarray:
    """``image`` resized (bicubic) so that its shorter side is ``side``; None: as it is."""
    if side is None:
        return image
    height, width = image.shape[:2]
    scale = side / min(height, width)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    return np.clip(cv2.resize(image, size, interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


class UnpairedFolder(UnpairedDomains):
    """The official layout: ``root/trainA`` (unknown blurry), ``trainB`` (unknown sharp), ``trainC``/``trainD``
    (known blurry/sharp, paired by file name; optional: the ``synthesizer`` known-blur generation needs none).

    Args:
        root: the folder holding trainA, trainB (and trainC, trainD).
        split: share of the sorted trainA images used (the first ones); trainB gives its last ``1 - split``, so
            that a paired set's scenes are never seen both blurry and sharp (official 0.6); unset: all of both,
            for A and B of different scenes.
        patch_size: side of the random crops (official 256); unset: whole images (they must then agree in size
            to be batched).
        load_size: A and B are resized so that their shorter side is this before cropping (official 512); unset:
            native resolution.
        known_load_size: the same for C and D (official: unset, native resolution).
        flip: random horizontal flips of A and B (official).
        blurry, sharp, known_blurry, known_sharp: the subfolder names.
    """

    def __init__(
        self,
        root: ExistingFolder,
        split: Split = 0.6,
        patch_size: Side | None = 256,
        load_size: Side | None = 512,
        known_load_size: Side | None = None,
        flip: bool = True,
        blurry: str = "trainA",
        sharp: str = "trainB",
        known_blurry: str = "trainC",
        known_sharp: str = "trainD",
    ) -> None:
        folder = Path(root)
        self.blurry_files, self.sharp_files = list_images(folder / blurry), list_images(folder / sharp)
        self.known_pairs: list[Any] = []
        if (folder / known_blurry).is_dir() or (folder / known_sharp).is_dir():
            self.known_pairs = pair_by_name(folder / known_blurry, folder / known_sharp)
        self.blurry_names = [path.stem for path in self.blurry_files]
        self.sharp_names = [path.stem for path in self.sharp_files]
        self.known_names = [pair.name for pair in self.known_pairs]
        super().__init__(split, patch_size, load_size, known_load_size, flip, str(folder))

    def blurry(self, position: int, key: tuple[int, ...]) -> np.ndarray:
        return read_image(self.blurry_files[position])

    def sharp(self, position: int, key: tuple[int, ...]) -> np.ndarray:
        return read_image(self.sharp_files[position])

    def known(self, position: int, key: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        pair = self.known_pairs[position]
        return read_image(pair.input), read_image(pair.target)


class Unpaired(UnpairedDomains):
    """The same roles from any of the project's datasets: ``unknown``'s blurry images and (other) sharp ones, and
    ``known``'s pairs, each read whole (a ``synthesized`` dataset makes new pairs every epoch), then cropped here.

    Args:
        unknown: a paired dataset node of the unknown domain; its inputs are the blurry images, its targets the
            sharp ones (split as below).
        known: a paired dataset node of the known domain (optional: the ``synthesizer`` generation needs none).
        split, patch_size, load_size, known_load_size, flip: as :class:`UnpairedFolder` (the defaults here keep
            native resolution, for datasets of small images).
    """

    def __init__(
        self,
        unknown: ComponentNode("dataset"),
        known: ComponentNode("dataset") | None = None,
        split: Split = 0.6,
        patch_size: Side | None = 256,
        load_size: Side | None = None,
        known_load_size: Side | None = None,
        flip: bool = True,
    ) -> None:
        self.unknown = resolve_node("dataset", as_node(unknown), "unknown").build()
        self.known_set = resolve_node("dataset", as_node(known), "known").build() if known else None
        self.blurry_names = self.sharp_names = [pair.name for pair in self.unknown.pairs]
        self.known_names = [pair.name for pair in self.known_set.pairs] if self.known_set else []
        super().__init__(split, patch_size, load_size, known_load_size, flip, "unpaired")

    def blurry(self, position: int, key: tuple[int, ...]) -> np.ndarray:
        return self.unknown.load_arrays(position, key)["input"]

    def sharp(self, position: int, key: tuple[int, ...]) -> np.ndarray:
        return self.unknown.load_arrays(position, key)["target"]

    def known(self, position: int, key: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        arrays = self.known_set.load_arrays(position, key)
        return arrays["input"], arrays["target"]


__all__ = ["Unpaired", "UnpairedFolder", "shorter_side"]
