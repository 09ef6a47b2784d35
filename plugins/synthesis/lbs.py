"""Local Blur Synthesis (LBS): objects moving over a sharp background, averaged over N frames.

From Wang et al., LODE: Deep Local Deblurring and A New Benchmark (arXiv 2109.09149), whose BladeNet
is trained on such pairs; the facts below are from the paper's official generator
(``komejisatori/BladeNet``, ``BlurGenerator/voc_img_generator.py`` and ``move_config.py``), re-written.

Per pair: static objects are pasted once onto the background (they are in the input and the
target alike, not in the mask); moving objects (cut-outs from PASCAL VOC, a folder of RGBA files
or segments of photos, :mod:`.objects`) are composited onto it in ``N`` frames, each object at its
own pose per frame (translation, scale and rotation about its centre); the frames are averaged in
linear light, ``B = ((1/N) sum_i F_i ** gamma) ** (1/gamma)``; the target is the middle frame
``F[N // 2]``; ``blur_mask`` (``H x W`` float, 1 or 0) is the union over the frames of the moving
objects' footprints.

What is reproduced from the official code (``quirks: true``, the ``official`` preset's default):

- the average is taken on 0..255 values in float32 and truncated to uint8 (not rounded), and every
  composited frame is truncated to uint8 as well;
- an object whose scale mode is non-zero does not rotate (the official applies both updates to the
  same source object, so the scaled one overwrites the rotated one);
- VOC instance PNGs are read as grayscale (gray 0 and 220, VOC's void colour, excluded), so instances
  whose palette colours have the same gray level merge;
- cut-outs are cropped by deleting every row and column that is black throughout (also inside the object);
- the motion is anchored at the first frame, which shows the object as cut, and a scaled or rotated
  object keeps the top-left corner of its bounding box (it grows to the right and down);
- the blur mask holds only the pixels an object covers fully (alpha 255): the official's alpha in
  [0, 1] is cast to uint8.

Deliberate deviations (also with ``quirks``):

- a pose is computed from the cut-out itself in every frame, one bilinear warp (``cv2.warpAffine``);
  the official re-rotates and re-scales (``INTER_AREA``) the previous frame's object, which blurs it a
  little more each frame, grows a rotated canvas by whole pixels and leaves objects narrower than
  50 px unscaled (``round(1.01 w) == w``);
- frames are composited and averaged only over the region the moving objects reach (the output is
  the same as averaging whole frames, where the float32 roundoff of unchanged pixels is reproduced by
  a table);
- everything is RGB float in [0, 1] (the official is BGR uint8).

Without ``quirks``: values stay float; objects are composited in linear light with premultiplied
alpha (partial coverage at an object's edge mixes light, and warped edges have no dark fringe);
the motion is anchored at the middle frame, so the target shows every object exactly as cut (no
resampling) at a uniformly drawn position, and the poses are symmetric around it; the mask is every
pixel any frame's object covers at all (alpha > 0), so the input differs from the target only inside
it. The ``paper`` preset's numbers (odd N in 7..13, objects rescaled by 1.2) are from the paper's
text, which the code does not follow; its other motion numbers are the code's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import cv2
import numpy as np
from pydantic import AfterValidator, Field

from deblurstack import ExistingFolder, Synthesizer
from deblurstack.engine.prepare import EMBEDDED_PHOTOS
from deblurstack.plugins.synthesis.common import Gamma, check_frames, from_linear, odd, to_linear
from deblurstack.plugins.synthesis.objects import (
    ObjectSource,
    PhotoSegments,
    RgbaObjects,
    Segmenter,
    VocObjects,
    draw_objects,
)

#: odd, so that there is a middle frame (the target)
#: one of the photos scikit-image ships
Photo = Literal[EMBEDDED_PHOTOS]
OddFrames = Annotated[int, Field(ge=1, le=255), AfterValidator(odd)]
#: a per-frame translation in pixels
Step = Annotated[float, Field(ge=-1000.0, le=1000.0, allow_inf_nan=False)]
#: a per-frame relative change of scale (0.01: 1 % a frame)
ScaleStep = Annotated[float, Field(ge=0.0, le=0.5, allow_inf_nan=False)]
#: a per-frame rotation in degrees
Degrees = Annotated[float, Field(ge=0.0, le=90.0, allow_inf_nan=False)]
#: a share of a photo's area
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Images = Annotated[int, Field(ge=0, le=64)]


@dataclass(frozen=True)
class Sprite:
    """A moving or static object ready to composite: its pixels and one 2 x 3 pose per frame.

    ``pixels`` is ``h x w x 4`` float32: premultiplied linear colour and alpha in [0, 1], or (quirks)
    straight 0..255 colour and alpha. ``poses[t]`` maps a pixel ``(x, y)`` of the object to the
    background (cv2's forward affine convention); ``exact[t]`` says it is a whole-pixel shift.
    """

    pixels: np.ndarray
    poses: np.ndarray
    exact: np.ndarray


class LocalBlurSynthesis(Synthesizer):
    """LODE's local blur synthesis: moving objects over one sharp background, averaged over N frames.

    Returns ``{"input", "target", "blur_mask"}``: the average of the frames in linear light, the middle
    frame, and the union of the moving objects' footprints (``H x W`` float32, 0 or 1). The module
    docstring lists what ``quirks`` reproduces of the official code and where this differs from it.
    Per pair, from ``rng``: ``N``, the static objects and their positions, then the moving objects and
    their motions (:meth:`sample`).

    Args:
        objects: where the objects come from: ``segments`` (cut from photos by a classical
            segmentation; weight-free, the photos scikit-image ships unless ``object_dir`` is set),
            ``voc`` (a PASCAL VOC 2012 folder with ``JPEGImages`` and ``SegmentationObject``, the
            official source) or ``rgba`` (a folder of cut-outs with an alpha channel).
        object_dir: the folder of the objects: a VOC folder, an RGBA folder, or photos to segment
            (``segments``; None: scikit-image's photos). Needed for ``voc`` and ``rgba``.
        object_photos: ``segments`` without ``object_dir``: which of scikit-image's photos to cut objects
            from (default: all), e.g. to hold some out for a test set.
        frames: range ``[low, high]`` of the number of frames ``N``, drawn uniformly among the odd
            numbers in it (official: 5..21; the paper says 7..13).
        dx: range of the horizontal translation per frame in pixels (+: right; official: 0 or 1).
        dy: range of the vertical translation per frame in pixels (+: down; official: 0 or 1).
        steps: ``per_object``: one step drawn per object and kept (a straight path at constant speed);
            ``per_frame``: a new step every frame (a random walk, as the official code).
        integer_steps: draw whole pixels, uniformly among the integers in ``dx`` and ``dy`` (official).
        scale: range of the per-frame relative scale change; each object scales up, down (drawn with
            equal chance) or not at all by ``1 + m`` per frame, ``m`` uniform in the range (official: 0.01).
        rotation: range of the per-frame rotation in degrees; each object turns clockwise,
            anticlockwise or not at all, about its centre (official: 0.3).
        moving_images: source images the moving objects are taken from (official: 2).
        static_images: source images the static objects are taken from (official: 2); 0 pastes none.
        max_instances: the most objects taken from one source image (1 to this many, uniformly; official: 2).
        object_scale: factor every object is resized by before it is pasted (the paper says 1.2).
        min_object_pixels: the fewest pixels a cut-out needs to be used (smaller instances are passed over).
        segmenter: ``segments``: ``felzenszwalb`` (segments follow colour edges) or ``slic`` (superpixels).
        segment_area: ``segments``: range of a segment's share of its photo's area.
        min_solidity: ``segments``: the lowest area / convex-hull area of a segment (1: convex only).
        segment_side: ``segments``: longer side in pixels the photos are segmented at.
        gamma: exponent of the camera response ``g^-1(y) = y ** gamma`` the frames are averaged under.
        quirks: reproduce the official code's numerics and quirks (module docstring); the
            ``official`` preset sets it.
    """

    def __init__(
        self,
        objects: Literal["segments", "voc", "rgba"] = "segments",
        object_dir: ExistingFolder | None = None,
        object_photos: Annotated[tuple[Photo, ...], Field(min_length=1)] | None = None,
        frames: tuple[OddFrames, OddFrames] = (7, 15),
        dx: tuple[Step, Step] = (-4.0, 4.0),
        dy: tuple[Step, Step] = (-4.0, 4.0),
        steps: Literal["per_object", "per_frame"] = "per_object",
        integer_steps: bool = False,
        scale: tuple[ScaleStep, ScaleStep] = (0.0, 0.02),
        rotation: tuple[Degrees, Degrees] = (0.0, 1.0),
        moving_images: Annotated[int, Field(ge=1, le=64)] = 2,
        static_images: Images = 2,
        max_instances: Annotated[int, Field(ge=1, le=64)] = 2,
        object_scale: Annotated[float, Field(ge=0.05, le=20.0, allow_inf_nan=False)] = 1.0,
        min_object_pixels: Annotated[int, Field(ge=1)] = 64,
        segmenter: Segmenter = "felzenszwalb",
        segment_area: tuple[Fraction, Fraction] = (0.01, 0.25),
        min_solidity: Fraction = 0.7,
        segment_side: Annotated[int, Field(ge=16, le=8192)] = 256,
        gamma: Gamma = 2.2,
        quirks: bool = False,
    ) -> None:
        for name, (low, high) in {
            "frames": frames,
            "dx": dx,
            "dy": dy,
            "scale": scale,
            "rotation": rotation,
            "segment_area": segment_area,
        }.items():
            if low > high:  # a relation between two values, which no hint can state
                raise ValueError(f"{name} must be a range [low, high], got [{low}, {high}]")
        if integer_steps:
            for name, (low, high) in (("dx", dx), ("dy", dy)):
                if math.ceil(low) > math.floor(high):
                    raise ValueError(f"integer_steps: {name} [{low}, {high}] holds no whole number of pixels")
        if object_photos is not None and (objects != "segments" or object_dir is not None):
            raise ValueError("object_photos picks scikit-image's photos: only for objects: segments, no object_dir")
        if objects != "segments" and object_dir is None:
            raise ValueError(f"objects: {objects} needs object_dir, the folder of the objects")
        self.objects, self.object_dir = objects, object_dir
        self.frames = tuple(range(frames[0], frames[1] + 1, 2))
        self.dx, self.dy, self.steps, self.integer_steps = tuple(dx), tuple(dy), steps, integer_steps
        self.scale, self.rotation = tuple(scale), tuple(rotation)
        self.moving_images, self.static_images, self.max_instances = moving_images, static_images, max_instances
        self.object_scale, self.gamma, self.quirks = object_scale, gamma, quirks
        self.source: ObjectSource
        if objects == "voc":
            self.source = VocObjects(object_dir, quirks, min_object_pixels)
        elif objects == "rgba":
            self.source = RgbaObjects(object_dir, quirks, min_object_pixels)
        else:
            self.source = PhotoSegments(
                object_dir,
                object_photos,
                segmenter,
                tuple(segment_area),
                min_solidity,
                segment_side,
                quirks,
                min_object_pixels,
            )
        # official numerics: x ** gamma of every 0..255 value in float32, as numpy computes it on a uint8 frame
        self._power = np.power(np.arange(256, dtype=np.float32), self.gamma)

    # ------------------------------------------------------------------ drawing

    def prepare(self, cutout: np.ndarray) -> np.ndarray:
        """A cut-out (uint8 RGBA) as the pixels :class:`Sprite` holds, resized by ``object_scale``."""
        pixels = cutout.astype(np.float32)
        if not self.quirks:
            alpha = pixels[..., 3:] / 255.0
            pixels = np.concatenate([alpha * to_linear(pixels[..., :3] / 255.0, self.gamma), alpha], axis=2)
        if self.object_scale != 1.0:
            height, width = pixels.shape[:2]
            size = (max(1, round(width * self.object_scale)), max(1, round(height * self.object_scale)))
            interpolation = cv2.INTER_AREA if self.object_scale < 1 else cv2.INTER_LINEAR
            pixels = cv2.resize(pixels, size, interpolation=interpolation)
            if self.quirks:
                pixels = np.rint(pixels)
        return np.ascontiguousarray(pixels, dtype=np.float32)

    def _draw_steps(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` per-frame translations ``(dx, dy)`` of one object."""
        draws = 1 if self.steps == "per_object" else count
        columns = []
        for low, high in (self.dx, self.dy):
            if self.integer_steps:
                column = rng.integers(math.ceil(low), math.floor(high) + 1, size=draws).astype(np.float64)
            else:
                column = rng.uniform(low, high, size=draws) if high > low else np.full(draws, low)
            columns.append(column)
        return np.broadcast_to(np.stack(columns, axis=1), (count, 2))

    def _draw_rate(self, rng: np.random.Generator, bounds: tuple[float, float]) -> float:
        """A signed per-frame rate: mode -1, 0 or +1 (equally likely) times a magnitude drawn in ``bounds``."""
        mode = int(rng.integers(-1, 2))
        low, high = bounds
        magnitude = float(rng.uniform(low, high)) if high > low else low
        return mode * magnitude

    def sample(self, rng: np.random.Generator, height: int, width: int) -> tuple[int, list[Sprite], list[Sprite]]:
        """``(N, static sprites, moving sprites)`` of one pair on a ``height x width`` background."""
        count = self.frames[int(rng.integers(len(self.frames)))]
        statics = []
        for cutout in draw_objects(self.source, rng, self.static_images, self.max_instances):
            pixels = self.prepare(cutout)
            centre = rng.integers(0, (width, height))
            statics.append(self._sprite(pixels, centre, np.zeros((1, 2)), 0.0, 0.0, 1, 0))
        reference = 0 if self.quirks else count // 2
        movers = []
        for cutout in draw_objects(self.source, rng, self.moving_images, self.max_instances):
            pixels = self.prepare(cutout)
            centre = rng.integers(0, (width, height))  # at the reference frame
            steps = self._draw_steps(rng, count - 1)
            growth = self._draw_rate(rng, self.scale)
            turn = self._draw_rate(rng, self.rotation)
            if self.quirks and growth != 0:
                turn = 0.0  # the official's scale update overwrites its rotation update
            movers.append(self._sprite(pixels, centre, steps, growth, turn, count, reference))
        return count, statics, movers

    def _sprite(
        self,
        pixels: np.ndarray,
        centre: np.ndarray,
        steps: np.ndarray,
        growth: float,
        turn: float,
        count: int,
        reference: int,
    ) -> Sprite:
        """The sprite whose anchor pixel ``(w // 2, h // 2)`` is at ``centre`` in frame ``reference``.

        Frame ``t`` is ``k = t - reference`` frames away: scaled by ``(1 + growth) ** k``, turned by
        ``turn * k`` degrees about the anchor, and moved by the steps between the two frames. With
        ``quirks`` the top-left corner of the object's bounding box moves with the steps instead.
        """
        height, width = pixels.shape[:2]
        anchor = np.array([width // 2, height // 2], dtype=np.float64)
        k = np.arange(count) - reference
        factor = (1.0 + growth) ** k.astype(np.float64)
        angle = np.radians(turn * k)
        cos, sin = factor * np.cos(angle), factor * np.sin(angle)
        linear = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # count x 2 x 2
        path = np.concatenate([np.zeros((1, 2)), np.cumsum(steps[: count - 1], axis=0)])[:count]
        moved = centre + path - path[reference]
        offset = moved - linear @ anchor
        if self.quirks:  # keep the bounding box's top-left corner where the plain object's would be
            corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64) - anchor
            low = (linear @ corners.T).min(axis=2)  # count x 2
            offset = (moved - anchor) - low - linear @ anchor
        poses = np.concatenate([linear, offset[..., None]], axis=2)
        same = k == 0  # the reference frame: the object as cut
        exact = (same | (growth == 0)) & (same | (turn == 0)) & np.all(offset == np.rint(offset), axis=1)
        return Sprite(pixels, poses, exact)

    # ------------------------------------------------------------------ rendering

    @staticmethod
    def _box(sprite: Sprite, t: int, height: int, width: int) -> tuple[int, int, int, int] | None:
        """``(top, bottom, left, right)`` of the background pixels frame ``t`` of ``sprite`` can touch, or None."""
        rows, cols = sprite.pixels.shape[:2]
        pose = sprite.poses[t]
        if sprite.exact[t]:
            left, top = int(pose[0, 2]), int(pose[1, 2])
            box = (top, top + rows, left, left + cols)
        else:
            corners = np.array([[-1, -1, 1], [cols, -1, 1], [-1, rows, 1], [cols, rows, 1]], dtype=np.float64)
            placed = corners @ pose.T
            low, high = np.floor(placed.min(axis=0)).astype(int), np.ceil(placed.max(axis=0)).astype(int) + 1
            box = (low[1], high[1], low[0], high[0])
        top, bottom, left, right = max(box[0], 0), min(box[1], height), max(box[2], 0), min(box[3], width)
        return (top, bottom, left, right) if top < bottom and left < right else None

    def _place(self, sprite: Sprite, t: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """Frame ``t`` of ``sprite`` over ``box`` of the background: ``rows x cols x 4``, 0 outside the object."""
        top, bottom, left, right = box
        pose = sprite.poses[t]
        if sprite.exact[t]:
            x, y = int(pose[0, 2]), int(pose[1, 2])
            return sprite.pixels[top - y : bottom - y, left - x : right - x]
        shifted = pose.copy()
        shifted[:, 2] -= (left, top)
        placed = cv2.warpAffine(
            sprite.pixels,
            shifted,
            (right - left, bottom - top),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        return np.rint(placed) if self.quirks else placed

    def _composite(self, canvas: np.ndarray, placed: np.ndarray) -> None:
        """Put ``placed`` over ``canvas`` (same box) in place."""
        if self.quirks:  # straight alpha on 0..255 values, truncated to uint8 as the official's frames are
            alpha = placed[..., 3:].astype(np.float64) / 255.0
            canvas[...] = (alpha * placed[..., :3] + (1.0 - alpha) * canvas).astype(np.uint8)
        else:  # premultiplied, in linear light
            canvas *= 1.0 - placed[..., 3:]
            canvas += placed[..., :3]

    def _covered(self, placed: np.ndarray) -> np.ndarray:
        return placed[..., 3] >= 255 if self.quirks else placed[..., 3] > 0

    def render(
        self, background: np.ndarray, count: int, statics: list[Sprite], movers: list[Sprite]
    ) -> dict[str, np.ndarray]:
        """The pair of a drawn scene (:meth:`sample`) on ``background`` (``H x W x 3`` float in [0, 1])."""
        height, width = background.shape[:2]
        scene = np.clip(np.rint(background * 255.0), 0, 255).astype(np.uint8) if self.quirks else background.copy()
        for sprite in statics:  # pasted once: identical in every frame, so in input and target alike
            box = self._box(sprite, 0, height, width)
            if box is None:
                continue
            top, bottom, left, right = box
            placed = self._place(sprite, 0, box)
            region = scene[top:bottom, left:right]
            if self.quirks:
                self._composite(region, placed)
            else:
                canvas = to_linear(region, self.gamma)
                self._composite(canvas, placed)
                covered = self._covered(placed)
                region[covered] = from_linear(canvas[covered], self.gamma)

        boxes = [[self._box(sprite, t, height, width) for t in range(count)] for sprite in movers]
        present = [box for frames in boxes for box in frames if box is not None]
        mask = np.zeros((height, width), np.float32)
        if not present:
            image = self._finish(scene)
            return {"input": image, "target": image.copy(), "blur_mask": mask}
        top = min(b[0] for b in present)
        bottom = max(b[1] for b in present)
        left = min(b[2] for b in present)
        right = max(b[3] for b in present)
        region = scene[top:bottom, left:right]
        base = region if self.quirks else to_linear(region, self.gamma)
        canvas = base.copy()
        total = np.zeros(base.shape, np.float32)
        blurred = np.zeros(base.shape[:2], bool)
        middle = count // 2
        covered_middle = np.zeros(base.shape[:2], bool)
        frame_middle = canvas
        touched: list[tuple[slice, slice]] = []
        for t in range(count):
            for rows, cols in touched:  # back to the background where the last frame's objects were
                canvas[rows, cols] = base[rows, cols]
            touched = []
            for sprite, frames in zip(movers, boxes, strict=True):
                box = frames[t]
                if box is None:
                    continue
                placed = self._place(sprite, t, box)
                rows, cols = slice(box[0] - top, box[1] - top), slice(box[2] - left, box[3] - left)
                self._composite(canvas[rows, cols], placed)
                covered = self._covered(placed)
                blurred[rows, cols] |= covered
                if t == middle:
                    covered_middle[rows, cols] |= placed[..., 3] > 0
                touched.append((rows, cols))
            total += np.take(self._power, canvas) if self.quirks else canvas
            if t == middle:
                frame_middle = canvas.copy()

        mask[top:bottom, left:right] = blurred
        blurry, sharp = scene.copy(), scene.copy()
        if self.quirks:
            # whole frames as the official averages them: unchanged pixels through the same float32 sums
            unchanged = np.zeros(256, np.float32)
            for _ in range(count):
                unchanged += self._power
            table = np.power(unchanged / count, 1.0 / self.gamma).astype(np.uint8)
            blurry = np.take(table, scene)
            blurry[top:bottom, left:right] = np.power(total / count, 1.0 / self.gamma).astype(np.uint8)
            sharp[top:bottom, left:right] = frame_middle
        else:
            mean = total * (1.0 / count)
            blurry[top:bottom, left:right][blurred] = from_linear(mean[blurred], self.gamma)
            sharp[top:bottom, left:right][covered_middle] = from_linear(frame_middle[covered_middle], self.gamma)
        return {"input": self._finish(blurry), "target": self._finish(sharp), "blur_mask": mask}

    def _finish(self, image: np.ndarray) -> np.ndarray:
        if self.quirks:
            return image.astype(np.float32) / np.float32(255.0)
        return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        (background,) = check_frames(frames, 1)
        count, statics, movers = self.sample(rng, *background.shape[:2])
        return self.render(background, count, statics, movers)


__all__ = ["LocalBlurSynthesis", "Sprite"]
