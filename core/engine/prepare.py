"""Making and reshaping datasets: blur synthesis over a folder (``deblurstack synth``), the embedded
default photos and the quickstart's data made from them, and the GoPro-style pre-crop (``deblurstack crop``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import AfterValidator, ConfigDict, Field
from tqdm import tqdm
from typing_extensions import NotRequired, TypedDict  # pydantic needs these, not typing's, before 3.12

from deblurstack.data import ImageError, list_images, read_image, write_bytes_atomic, write_image
from deblurstack.errors import ConfigError

if TYPE_CHECKING:
    from deblurstack.compose import ResolvedNode

#: the real photos scikit-image ships (no download): the embedded default data
EMBEDDED_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)
#: more real photographs scikit-image ships (five grayscale, the colour motorcycle) and the colour portrait
#: matplotlib ships (its sample data), outside the default set so that data made from it stay as they were
EXTRA_PHOTOS = ("clock", "coins", "moon", "page", "text", "motorcycle", "grace_hopper")
EMBEDDED = "skimage"
#: synthetic bundled images beside the photos: ``dead_leaves_<k>`` is image k of :func:`dead_leaves`
DEAD_LEAVES = re.compile(r"dead_leaves_(0|[1-9][0-9]{0,5})")


def _photo_name(name: str) -> str:
    if name not in EMBEDDED_PHOTOS + EXTRA_PHOTOS and not DEAD_LEAVES.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a bundled photo: one of {', '.join(EMBEDDED_PHOTOS + EXTRA_PHOTOS)}, "
            f"or dead_leaves_<k> (synthetic, k from 0 to 999999)"
        )
    return name


def _unique(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"named more than once: {', '.join(repeated)}")
    return names


Seed = Annotated[int, Field(ge=0)]
#: a bundled photo's name: one of ``EMBEDDED_PHOTOS`` or ``EXTRA_PHOTOS``, or ``dead_leaves_<k>``
PhotoName = Annotated[str, AfterValidator(_photo_name)]
#: the recipe's photographs (its dead-leaves images come from ``dead_leaves``, so none is both trained and tested on)
Photos = Annotated[list[Literal[EMBEDDED_PHOTOS + EXTRA_PHOTOS]], AfterValidator(_unique)]
#: what ``dead_leaves`` draws, in the train split's stamp: bump ``version`` when the drawing changes, so data
#: made by another drawing are not taken for these
DEAD_LEAVES_MODEL = {"version": 1, "size": 512, "discs": 10000}


class QuickstartSeeds(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")
    train: Seed
    val: Seed
    test: Seed


class QuickstartRecipe(TypedDict):
    """What ``deblurstack quickstart`` synthesizes: the ``vars`` of examples/quickstart.yaml (no other keys, so a
    misspelt one is refused rather than ignored)."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    data: NotRequired[str]  # where the pairs go (the command sets it)
    blur: dict[str, Any]  # a synthesizer node
    photos: Annotated[Photos, Field(min_length=2)]
    test_photos: Annotated[Photos, Field(min_length=1)]  # held out of photos
    # synthetic dead-leaves images (dead_leaves_0 ...) trained on beside the training photos, not validated on
    dead_leaves: NotRequired[Annotated[int, Field(ge=0, le=1000)]]
    pairs_per_photo: Annotated[int, Field(ge=1)]
    max_side: Annotated[int, Field(ge=16)]
    seeds: QuickstartSeeds


def dead_leaves(
    index: int, size: int = DEAD_LEAVES_MODEL["size"], discs: int = DEAD_LEAVES_MODEL["discs"]
) -> np.ndarray:
    """Image ``index`` of the dead-leaves model, ``size`` x ``size`` RGB float32 in [0, 1].

    Opaque discs fall on one another until hardly any background shows: radii drawn from p(r) ~ r^-3 (scale
    invariant, as the sizes of objects in photos) between ``size / 160`` and ``3 size / 8``, centres uniform, each
    disc a random grey level plus a little colour (N(0, 30/255) per channel). Drawn at twice the size and
    area-downscaled, so edges are anti-aliased as a lens would leave them. The same ``index`` gives the same image.
    """
    rng = np.random.default_rng([0xDEAD1EAF, index])
    scale = 2 * size
    smallest, largest = scale / 160, 3 * scale / 8
    # inverse CDF of p(r) ~ r^-3 on [smallest, largest]
    radii = (smallest**-2 - rng.random(discs) * (smallest**-2 - largest**-2)) ** -0.5
    centres = rng.integers(0, scale, (discs, 2))
    colours = np.clip(rng.uniform(0, 255, (discs + 1, 1)) + rng.normal(0, 30, (discs + 1, 3)), 0, 255)
    canvas = np.empty((scale, scale, 3), np.uint8)
    canvas[:] = colours[discs]  # what the discs leave uncovered (a corner, at most)
    for (x, y), radius, colour in zip(centres[::-1], radii[::-1], colours[:discs][::-1], strict=True):
        cv2.circle(canvas, (int(x), int(y)), max(1, int(radius)), colour.tolist(), -1)  # the first disc ends on top
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def embedded_photos(max_side: int | None = 512, names: Sequence[str] = EMBEDDED_PHOTOS) -> dict[str, np.ndarray]:
    """The bundled photos as RGB float32 in [0, 1] (grayscale ones repeated to three channels); a ``dead_leaves_<k>``
    name gives :func:`dead_leaves` image k, 512 pixels square before ``max_side``."""
    from skimage import data

    photos = {}
    for name in names:
        if match := DEAD_LEAVES.fullmatch(name):
            photos[name] = limit_side(dead_leaves(int(match[1])), max_side)  # the 512 px of DEAD_LEAVES_MODEL
            continue
        if name == "grace_hopper":
            from matplotlib import cbook
            from skimage import io

            image = io.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        elif name == "motorcycle":  # the left view of scikit-image's stereo pair (the right one is nearly the same)
            image = data.stereo_motorcycle()[0]
        else:
            image = getattr(data, name)()
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        photos[name] = limit_side(image[..., :3].astype(np.float32) / 255.0, max_side)
    return photos


def synthesize(
    source: str | Path,
    out: str | Path,
    synthesizer: object,
    frames: int = 1,
    seed: int = 0,
    per_image: int = 1,
    max_side: int | None = None,
    provides: Sequence[str] = (),
    names: Sequence[str] | None = None,
) -> list[str]:
    """Write ``out/input``, ``out/target`` (and ``out/<aux>``) pairs made by ``synthesizer``.

    ``source`` is a folder of sharp images, a folder of frame-sequence folders (when the
    synthesizer takes ``frames > 1`` consecutive frames), or ``"skimage"`` for the embedded
    photos (optionally only ``names`` of them). Each source image gives ``per_image`` pairs;
    pair ``k`` of item ``i`` draws from ``numpy.random.default_rng([seed, i, k])``, so any
    pair can be regenerated alone. Returns the pair names.
    """
    out = Path(out)
    written = []
    items = list(_sharp_items(source, frames, max_side, names))
    for index, (name, load) in enumerate(tqdm(items, desc=f"synthesizing into {out}", unit="image")):
        sharp = load()
        for variant in range(per_image):
            result = synthesizer(sharp, np.random.default_rng([seed, index, variant]))
            pair = f"{name}_{variant}" if per_image > 1 else name
            write_image(out / "input" / f"{pair}.png", result["input"])
            write_image(out / "target" / f"{pair}.png", result["target"])
            for aux in provides:
                write_image(out / aux / f"{pair}.png", result[aux])
            written.append(pair)
    return written


def quickstart_data(data: Path, recipe: QuickstartRecipe, blur: ResolvedNode) -> dict[str, list[str]]:
    """Make ``data/{train,val,test}`` from the embedded photos as ``recipe`` says (``blur``: its resolved synthesizer
    node); returns the photos of each split. A :class:`ConfigError` when a split folder exists but this recipe did
    not make it.

    Each finished split holds a ``recipe.json`` stamp; a folder without it (another recipe, or a run killed while
    synthesizing) is never reused or overwritten, so nothing trains on pairs the recipe does not describe."""
    training = [name for name in recipe["photos"] if name not in recipe["test_photos"]]
    leaves = [f"dead_leaves_{index}" for index in range(recipe.get("dead_leaves", 0))]
    # validation (which picks best.pth) draws other pairs of the training photos: no choice is made on the test
    # photos, nor on the synthetic images (what counts is how the model does on photographs)
    splits = {"train": training + leaves, "val": training, "test": list(recipe["test_photos"])}
    stamps = {
        split: json.dumps(
            {
                "blur": blur.to_dict(),  # every parameter written out: a changed default is another recipe
                "seed": recipe["seeds"][split],
                "per_image": 1 if split == "val" else recipe["pairs_per_photo"],
                "max_side": recipe["max_side"],
                "names": names,
                # only where they are: stamps of splits without them stay as they were
                **({"dead_leaves": DEAD_LEAVES_MODEL} if any(DEAD_LEAVES.fullmatch(name) for name in names) else {}),
            },
            sort_keys=True,
            indent=1,
        )
        for split, names in splits.items()
    }
    for split, stamp in stamps.items():  # every split is looked at before any is written
        folder, made_by = data / split, data / split / "recipe.json"
        if folder.exists() and not (made_by.is_file() and made_by.read_text() == stamp):
            raise ConfigError(
                f"{folder}: made by another quickstart recipe (or left unfinished); remove it or pass --data ELSEWHERE"
            )
    synthesizer = blur.build()
    for split, stamp in stamps.items():
        if not (data / split / "recipe.json").is_file():
            settings = json.loads(stamp)
            synthesize(
                EMBEDDED,
                data / split,
                synthesizer,
                seed=settings["seed"],
                per_image=settings["per_image"],
                max_side=settings["max_side"],
                names=settings["names"],
            )
            write_bytes_atomic(data / split / "recipe.json", stamp.encode())  # last: the split is complete
    return splits


def _sharp_items(
    source: str | Path, frames: int, max_side: int | None, names: Sequence[str] | None
) -> Iterator[tuple[str, object]]:
    """(name, loader of the frame list) for every pair to make."""
    if str(source) == EMBEDDED:
        if frames != 1:
            raise ImageError(
                f"the embedded photos are single images; a synthesizer of {frames} frames needs a "
                f"folder of frame sequences"
            )
        for name, photo in embedded_photos(max_side, names or EMBEDDED_PHOTOS).items():
            yield name, lambda photo=photo: [photo]
        return
    folder = Path(source)
    if frames == 1:
        for path in list_images(folder):
            yield path.stem, lambda path=path: [limit_side(read_image(path), max_side)]
        return
    sequences = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not sequences:
        raise ImageError(f"{folder}: no sequence folders (frame averaging reads <folder>/<sequence>/<frames>)")
    for sequence in sequences:
        paths = list_images(sequence)
        for start in range(0, len(paths) - frames + 1, frames):
            window = paths[start : start + frames]
            yield (
                f"{sequence.name}_{start:06d}",
                lambda window=window: [limit_side(read_image(p), max_side) for p in window],
            )


def limit_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` resized (area interpolation) so that its longer side is at most ``max_side`` (None: as it is)."""
    height, width = image.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    return cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------- crops


def crop_positions(length: int, size: int, stride: int) -> list[int]:
    """Window starts every ``stride`` pixels, plus one flush with the end if the last misses it
    (BasicSR's extract_subimages: 1280x720 at 512/256 gives 4 x 2 = 8 crops)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def crop_folder(source: str | Path, out: str | Path, size: int = 512, stride: int = 256) -> int:
    """Cut every image of ``source`` into ``size`` crops named ``<stem>_s001.png``... in ``out``.

    Files are cut as stored (bit depth and channels kept), so blurry, sharp and mask folders
    with the same names give matching crops. Returns the number of crops written.
    """
    count = 0
    for path in tqdm(list_images(source), desc=f"cropping {source}", unit="image"):
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ImageError(f"{path}: not a readable image (empty, truncated or unknown format)")
        index = 0
        for top in crop_positions(image.shape[0], size, stride):
            for left in crop_positions(image.shape[1], size, stride):
                index += 1
                ok, encoded = cv2.imencode(".png", image[top : top + size, left : left + size])
                if not ok:
                    raise ImageError(f"{path}: cannot encode a crop")
                write_bytes_atomic(Path(out) / f"{path.stem}_s{index:03d}.png", encoded.tobytes())
                count += 1
    return count


__all__ = [
    "DEAD_LEAVES",
    "DEAD_LEAVES_MODEL",
    "EMBEDDED",
    "EMBEDDED_PHOTOS",
    "EXTRA_PHOTOS",
    "PhotoName",
    "crop_folder",
    "crop_positions",
    "dead_leaves",
    "embedded_photos",
    "limit_side",
    "synthesize",
]
