"""Dataset layouts: each class lists the pairs of one layout; loading, crops and augmentation
come from :class:`deblurstack.data.PairedImageDataset` (whose docstring documents the shared
parameters patch_size, augment, small_images, aux_sources, skip_bad and cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from deblurstack.data import ImageError, Pair, PairedImageDataset, pair_by_name
from deblurstack.params import ExistingFile, ExistingFolder

Small = Literal["pad", "error"]
#: side of the square random crop; 8192 is far above any benchmark's frames (GoPro: 1280 x 720), while a crop of
#: that side is already 800 MB of float32 RGB per sample
PatchSize = Annotated[int, Field(ge=1, le=8192)]


class PairedFolder(PairedImageDataset):
    """Blurry and sharp folders paired by file name.

    Args:
        input_dir: folder of blurry images.
        target_dir: folder of sharp images with the same file names (stems).
    """

    def __init__(
        self,
        input_dir: ExistingFolder,
        target_dir: ExistingFolder,
        patch_size: PatchSize | None = None,
        augment: bool = False,
        small_images: Small = "pad",
        aux_sources: Any = None,
        skip_bad: bool = False,
        cache: bool = False,
    ) -> None:
        super().__init__(
            pair_by_name(input_dir, target_dir), patch_size, augment, small_images, aux_sources, skip_bad, cache
        )


class LocalBlurFolder(PairedImageDataset):
    """Blurry, sharp and blur-mask folders paired by file name (LODE / local blur synthesis).

    Args:
        input_dir: folder of blurry images.
        target_dir: folder of sharp images with the same names.
        mask_dir: folder of blur masks with the same names (non-zero = blurred).
    """

    def __init__(
        self,
        input_dir: ExistingFolder,
        target_dir: ExistingFolder,
        mask_dir: ExistingFolder,
        patch_size: PatchSize | None = None,
        augment: bool = False,
        small_images: Small = "pad",
        aux_sources: Any = None,
        skip_bad: bool = False,
        cache: bool = False,
    ) -> None:
        pairs = pair_by_name(input_dir, target_dir, {"blur_mask": mask_dir})
        super().__init__(pairs, patch_size, augment, small_images, aux_sources, skip_bad, cache)


class PairedList(PairedImageDataset):
    """Pairs listed in a text file, two paths per line.

    Args:
        list_file: the list.
        root: folder the listed paths are relative to (default: the list file's folder).
        order: which column is the blurry input.
    """

    def __init__(
        self,
        list_file: ExistingFile,
        root: ExistingFolder | None = None,
        order: Literal["input target", "target input"] = "input target",
        patch_size: PatchSize | None = None,
        augment: bool = False,
        small_images: Small = "pad",
        aux_sources: Any = None,
        skip_bad: bool = False,
        cache: bool = False,
    ) -> None:
        pairs = read_list(Path(list_file), Path(root) if root else None, target_first=order == "target input")
        super().__init__(pairs, patch_size, augment, small_images, aux_sources, skip_bad, cache)


class GoPro(PairedImageDataset):
    """GoPro_Large: ``<split>/<sequence>/{blur,blur_gamma,sharp}/``, or MIMO-UNet's flattened copy.

    Args:
        root: the GOPRO_Large folder (or the flattened GOPRO folder with ``<split>/{blur,sharp}``).
        split: ``train`` or ``test``.
        blur: ``blur`` (NAFNet, MIMO-UNet and most single-image methods) or ``blur_gamma``; no default
            on purpose, the two give different numbers.
    """

    def __init__(
        self,
        root: ExistingFolder,
        split: Literal["train", "test"],
        blur: Literal["blur", "blur_gamma"],
        patch_size: PatchSize | None = None,
        augment: bool = False,
        small_images: Small = "pad",
        aux_sources: Any = None,
        skip_bad: bool = False,
        cache: bool = False,
    ) -> None:
        base = existing_folder(Path(root) / split)
        if (base / blur).is_dir():
            pairs = pair_by_name(base / blur, base / "sharp")
        else:
            pairs = [
                pair
                for sequence in subfolders(base)
                for pair in pair_by_name(sequence / blur, sequence / "sharp", prefix=f"{sequence.name}_")
            ]
        super().__init__(pairs, patch_size, augment, small_images, aux_sources, skip_bad, cache)


class Reds(PairedImageDataset):
    """REDS clips: ``<split>_<blur>/<clip>/<frame>.png`` against ``<split>_sharp/<clip>/<frame>.png``.

    Args:
        root: folder holding ``<split>_<blur>/`` and ``<split>_sharp/``.
        split: ``train`` or ``val``.
        blur: the blurry subset (NAFNet's REDS model used ``blur_jpeg``).
        subset: ``val_300`` keeps frames whose name ends in 9 (10 per clip), NAFNet's REDS validation set.
    """

    def __init__(
        self,
        root: ExistingFolder,
        split: Literal["train", "val"],
        blur: Literal["blur", "blur_jpeg", "blur_comp"] = "blur",
        subset: Literal["all", "val_300"] = "all",
        patch_size: PatchSize | None = None,
        augment: bool = False,
        small_images: Small = "pad",
        aux_sources: Any = None,
        skip_bad: bool = False,
        cache: bool = False,
    ) -> None:
        blurry = existing_folder(Path(root) / f"{split}_{blur}")
        sharp = existing_folder(Path(root) / f"{split}_sharp")
        pairs = [
            pair
            for clip in subfolders(blurry)
            for pair in pair_by_name(clip, sharp / clip.name, prefix=f"{clip.name}_")
        ]
        if subset == "val_300":
            pairs = [pair for pair in pairs if pair.input.stem.endswith("9")]
        super().__init__(pairs, patch_size, augment, small_images, aux_sources, skip_bad, cache)


class RealBlur(PairedImageDataset):
    """RealBlur-J or RealBlur-R from its list file (``gt blur`` per line).

    Score it with the ``realblur`` metric (ECC alignment); unaligned numbers are not comparable.

    Args:
        list_file: e.g. RealBlur_J_test_list.txt.
        root: folder the listed paths are relative to.
    """

    def __init__(
        self,
        list_file: ExistingFile,
        root: ExistingFolder,
        patch_size: PatchSize | None = None,
        augment: bool = False,
        small_images: Small = "pad",
        aux_sources: Any = None,
        skip_bad: bool = False,
        cache: bool = False,
    ) -> None:
        pairs = read_list(Path(list_file), Path(root), target_first=True)
        super().__init__(pairs, patch_size, augment, small_images, aux_sources, skip_bad, cache)


class RSBlur(RealBlur):
    """RSBlur from its list file (``gt blur`` per line), e.g. RSBlur_real_test.txt.

    Args:
        list_file: the list file.
        root: the RSBlur folder the listed paths are relative to.
    """


class ReLoBlur(PairedImageDataset):
    """ReLoBlur: ``dataset/<split>/<scene>/<n>/<n>_{blur,sharp}.png`` with masks under ``masks/``.

    The mask of ``dataset/<split>/<scene>/<n>/<n>_sharp.png`` is ``masks/<split>/<scene>/<n>/<n>.png``.

    Args:
        root: folder holding ``dataset/`` and ``masks/``.
        split: ``train`` or ``test``.
    """

    def __init__(
        self,
        root: ExistingFolder,
        split: Literal["train", "test"],
        patch_size: PatchSize | None = None,
        augment: bool = False,
        small_images: Small = "pad",
        aux_sources: Any = None,
        skip_bad: bool = False,
        cache: bool = False,
    ) -> None:
        base = existing_folder(Path(root) / "dataset" / split)
        pairs = []
        for sharp in sorted(base.rglob("*_sharp.png")):
            relative = sharp.relative_to(base)
            stem = sharp.name.removesuffix("_sharp.png")
            mask = Path(root) / "masks" / split / relative.parent / f"{stem}.png"
            blurry = sharp.with_name(f"{stem}_blur.png")
            pairs.append(Pair("_".join((*relative.parent.parts, stem)), blurry, sharp, {"blur_mask": mask}))
        if not pairs:
            raise ImageError(f"{base}: no *_sharp.png files")
        super().__init__(pairs, patch_size, augment, small_images, aux_sources, skip_bad, cache)


def read_list(list_file: Path, root: Path | None, target_first: bool) -> list[Pair]:
    """Pairs from a list file of two relative paths per line; a missing file names its line."""
    if not list_file.is_file():
        raise ImageError(f"{list_file}: no such list file")
    root = root or list_file.parent
    pairs = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ImageError(f"{list_file}:{number}: expected two paths, found {len(fields)}")
        target, blurry = fields if target_first else fields[::-1]
        name = Path(blurry).with_suffix("").as_posix().replace("/", "_")
        pairs.append(
            Pair(name, listed_file(root / blurry, list_file, number), listed_file(root / target, list_file, number))
        )
    if not pairs:
        raise ImageError(f"{list_file}: lists no pairs")
    return pairs


def listed_file(path: Path, list_file: Path, number: int) -> Path:
    if path.is_file():
        return path
    renamed = Path(str(path).replace("scene244/", "scene244_reflect/"))  # how RealBlur ships that scene
    if renamed.is_file():
        return renamed
    raise ImageError(f"{list_file}:{number}: no such file {path}")


def existing_folder(path: Path) -> Path:
    if not path.is_dir():
        raise ImageError(f"{path}: no such folder")
    return path


def subfolders(path: Path) -> list[Path]:
    folders = sorted(p for p in path.iterdir() if p.is_dir())
    if not folders:
        raise ImageError(f"{path}: no sequence folders")
    return folders
