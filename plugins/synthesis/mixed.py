"""A mixture of blur families: each pair is made by one synthesizer drawn at random from a list
(camera shake of several lengths, defocus, frame averaging ...), then gets sensor noise.

A model trained on one family learns that family's kernels; one trained on a mixture has to
estimate the blur from the image, which is what makes it hold up on blur it has not seen. The
mixture can also leave a share of the pairs sharp (only noisy), which teaches the model to leave
sharp content alone instead of sharpening everything it is given, and vary the colours of the sharp
photo (channel order, white balance): a small model trained on a handful of photos, half of them
grey, otherwise meets hues at test time it has never seen (a blue sky) and shifts them.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field

from deblurstack import ConfigError, Synthesizer
from deblurstack.plugins.synthesis.common import NoiseSigma, check_frames, from_linear, to_linear

#: the children's key path in their own problems, replaced by the item's position in the list
_HERE = "@"


def _single_frame_node(node: Any) -> dict[str, Any]:
    """A synthesizer node (``{type: name[.preset], ...}``), checked like any node, that makes a pair from one image."""
    from deblurstack.compose import resolve_node

    if not isinstance(node, dict):
        raise ValueError(f"must be a synthesizer node {{type: name, ...}}, got {node!r}")
    try:
        resolved = resolve_node("synthesizer", node, _HERE, source=_HERE)
    except ConfigError as error:
        problems = (p.removeprefix(f"{_HERE}: ").replace(f"{_HERE}.", "") for p in error.problems)
        raise ValueError("; ".join(problems)) from None
    frames = resolved.record.frames
    count = resolved.params.get(frames) if isinstance(frames, str) else frames
    if count != 1:
        raise ValueError(f"synthesizer {resolved.type!r} takes {count} frames; a mixture of blurs takes one image")
    return resolved.to_dict()


SynthesizerNode = Annotated[dict[str, Any], AfterValidator(_single_frame_node)]
#: white level in photons (shot noise): fewer photons, more noise
Photons = Annotated[float, Field(gt=0.0, le=1e9, allow_inf_nan=False)]
#: the synthesizers used when ``components`` is not given
DEFAULT_COMPONENTS = ({"type": "motion_blur"}, {"type": "defocus"})


class Mixed(Synthesizer):
    """Blur from a mixture: each pair draws one of ``components`` (by ``weights``), or stays sharp, then gets noise.

    Per pair, from its random generator: the sharp photo's colours are varied first when asked
    (``shuffle_channels``: one of the 6 orders of R, G, B; ``tint``: each channel scaled by a gain
    drawn in ``[1 - tint, 1]``), and the varied photo is the target. Then with probability
    ``sharp_probability`` the blurry image is the sharp one; otherwise component ``j`` (drawn with
    probability proportional to ``weights[j]``) makes the pair from the same generator. Then noise is
    added to the blurry image: Poisson shot noise on the linear intensities (``photons`` at white, drawn
    log-uniformly in the range), then white Gaussian noise of a std drawn uniformly in ``noise_sigma``.
    The target is the component's target.

    Maps: ``blur_mask``, when any component makes one (``lbs``), as each pair's blurred region: the
    component's mask, the whole image for a component of global blur, none of it for a pair left sharp.
    Other maps are dropped (a sharp pair would have none to give).

    Args:
        components: synthesizer nodes (``{type: motion_blur, max_length: 12.0}``), each of one frame;
            checked like any node (default: ``motion_blur`` and ``defocus`` with their defaults).
        weights: relative probability of each component (as many as components, not all 0); unset: equal.
        sharp_probability: share of pairs left unblurred (only the noise is added), in [0, 1].
        noise_sigma: range ``[low, high]`` of the std of white Gaussian noise on [0, 1] display values,
            drawn uniformly per pair; ``[0, 0]`` adds none.
        photons: range ``[low, high]`` of the white level in photons for Poisson shot noise in linear
            space, drawn log-uniformly per pair (100: strong noise, 10000: faint); unset adds none.
        gamma: exponent of the camera response ``g^-1(y) = y ** gamma`` used for the shot noise.
        shuffle_channels: put the sharp photo's R, G, B channels in a random order per pair.
        tint: largest loss of each channel's gain (white balance) applied to the sharp photo, in [0, 1); 0 keeps it.
    """

    def __init__(
        self,
        components: tuple[SynthesizerNode, ...] = DEFAULT_COMPONENTS,
        weights: tuple[Annotated[float, Field(ge=0.0, allow_inf_nan=False)], ...] | None = None,
        sharp_probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
        noise_sigma: tuple[NoiseSigma, NoiseSigma] = (0.0, 0.0),
        photons: tuple[Photons, Photons] | None = None,
        gamma: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 2.2,
        shuffle_channels: bool = False,
        tint: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
    ) -> None:
        from deblurstack.compose import resolve_node

        nodes = [_single_frame_node(dict(node)) for node in components]
        if not nodes:
            raise ValueError("components is empty: name at least one synthesizer")
        if weights is not None and len(weights) != len(nodes):
            raise ValueError(f"{len(weights)} weights for {len(nodes)} components")
        if weights is not None and not sum(weights) > 0:
            raise ValueError("the weights are all 0")
        for name, (low, high) in (("noise_sigma", noise_sigma), ("photons", photons or (1.0, 1.0))):
            if low > high:
                raise ValueError(f"{name} must be a range [low, high], got [{low}, {high}]")
        try:
            self.components = [
                resolve_node("synthesizer", node, f"components.{i}", source=_HERE).build()
                for i, node in enumerate(nodes)
            ]
        except ConfigError as error:  # located in the list; the builder adds the file and the node's key path
            raise ConfigError([p.removeprefix(f"{_HERE}: ") for p in error.problems]) from error
        self.nodes = nodes
        total = sum(weights) if weights is not None else len(nodes)
        self.probabilities = [w / total for w in weights] if weights is not None else [1 / len(nodes)] * len(nodes)
        self.sharp_probability, self.noise_sigma, self.photons, self.gamma = (
            sharp_probability,
            tuple(noise_sigma),
            tuple(photons) if photons is not None else None,
            gamma,
        )
        self.shuffle_channels, self.tint = shuffle_channels, tint
        self.provides = self.provided_inputs({"components": nodes})

    @staticmethod
    def provided_inputs(params: dict[str, Any]) -> tuple[str, ...]:
        """The maps of every pair (see the class docstring); ``deblurstack.compose.node_provides`` calls this."""
        from deblurstack.compose import node_provides, resolve_node

        nodes = params.get("components", DEFAULT_COMPONENTS)
        made = {name for node in nodes for name in node_provides(resolve_node("synthesizer", dict(node), _HERE))}
        return ("blur_mask",) if "blur_mask" in made else ()

    def vary_colours(self, sharp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The sharp photo with its channels reordered and tinted as configured (the pair's target)."""
        if self.shuffle_channels:
            sharp = np.ascontiguousarray(sharp[..., rng.permutation(3)])
        if self.tint > 0:
            sharp = sharp * rng.uniform(1.0 - self.tint, 1.0, size=3).astype(np.float32)
        return sharp

    def choose(self, rng: np.random.Generator) -> int | None:
        """The component a pair is made with (None: left sharp); what :meth:`__call__` draws first."""
        if self.sharp_probability > 0 and rng.uniform() < self.sharp_probability:
            return None
        return int(rng.choice(len(self.components), p=self.probabilities))

    def add_noise(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Shot noise (linear space), then white Gaussian noise, clipped to [0, 1]; float32."""
        if self.photons is not None:
            low, high = self.photons
            photons = math.exp(rng.uniform(math.log(low), math.log(high))) if high > low else low
            linear = to_linear(image, self.gamma)
            image = from_linear(rng.poisson(linear * photons) / photons, self.gamma)
        low, high = self.noise_sigma
        sigma = float(rng.uniform(low, high)) if high > low else low
        if sigma > 0:
            image = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
        return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        (sharp,) = check_frames(frames, 1)
        sharp = self.vary_colours(sharp, rng)
        choice = self.choose(rng)
        made = {"input": sharp, "target": sharp} if choice is None else dict(self.components[choice]([sharp], rng))
        made["input"] = self.add_noise(made["input"], rng)
        if self.provides and "blur_mask" not in made:  # a sharp pair, or global blur
            made["blur_mask"] = np.full(sharp.shape[:2], float(choice is not None), np.float32)
        return {key: made[key] for key in ("input", "target", *self.provides)}
