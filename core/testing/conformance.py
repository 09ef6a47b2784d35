"""Conformance checks: does a registered component keep the contract of its kind?

Every check looks the component up in the current plugin manager (``name`` or ``name.preset``),
builds it with ``params`` and raises ``AssertionError`` naming the component and the broken rule.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deblurstack.compose import shadowed_parameters
from deblurstack.contracts import IMAGE_CHANNELS
from deblurstack.errors import one_line
from deblurstack.params import EMPTY, read_signature
from deblurstack.registry import get_plugin_manager

EXTRA_CHANNELS = 2
BATCH = 2
SEED = 1234


def check_component(kind: str, name: str, params: Mapping[str, Any] | None = None, **options: Any) -> None:
    """Run the checks of ``kind`` on a registered component (every kind: see the ``check_<kind>`` functions)."""
    checks: dict[str, Callable[..., None]] = {
        "backbone": check_backbone,
        "prior": check_prior,
        "translator": check_translator,
        "discriminator": check_discriminator,
        "loss": check_loss,
        "metric": check_metric,
        "dataset": check_dataset,
        "mask_source": check_mask_source,
        "synthesizer": check_synthesizer,
        "trainer": check_trainer,
    }
    if kind not in checks:
        raise ValueError(f"no conformance checks for kind {kind!r} (checked kinds: {', '.join(checks)})")
    checks[kind](name, params, **options)


def check_backbone(name: str, params: Mapping[str, Any] | None = None) -> None:
    """Odd sizes, padding multiple, extra channels, guidance points, gradients, determinism, state_dict."""
    record, build = _builder("backbone", name, params)
    signature = read_signature(build.factory)
    _expect(
        not record.extra_channels or signature.open or "in_channels" in signature.parameters,
        name,
        "its record says extra_channels (the default), so its factory must take in_channels (3 + the priors' "
        "channels); a backbone that takes only the image says extra_channels=False",
    )
    module = build()
    multiple = getattr(module, "pad_multiple", 1)
    _expect(isinstance(multiple, int) and multiple >= 1, name, f"pad_multiple must be a positive int, got {multiple!r}")
    image = _images(module_sizes(multiple))
    for x in image:
        try:
            raw = module(x)
        except RuntimeError as error:
            raise AssertionError(
                f"{name}: fails on a {x.shape[-2]}x{x.shape[-1]} input (pad_multiple={multiple}): a backbone takes "
                f"any size, padding inside forward (pad_to_multiple) and cropping back ({_first_line(error)})"
            ) from None
        is_list = isinstance(raw, (list, tuple))
        _expect(
            is_list == record.multiscale,
            name,
            "returns a list of scales, but its record does not say multiscale"
            if is_list
            else "returns one tensor, but its record says multiscale",
        )
        out = list(raw) if is_list else [raw]
        _expect(
            out[-1].shape == x.shape,
            name,
            f"output {tuple(out[-1].shape)} for input {tuple(x.shape)} "
            f"(inputs whose size is not a multiple of pad_multiple={multiple} must be padded and cropped back)",
        )
    _check_gradients(module, lambda: sum(o.mean() for o in _forward_backbone(module, image[-1])), name)
    _check_reproducible(build, lambda m: _forward_backbone(m, image[-1])[-1], name)
    _check_residual(build, record, image[-1], name)

    if record.extra_channels:
        wide = build(in_channels=IMAGE_CHANNELS + EXTRA_CHANNELS).eval()
        x = image[-1]
        extra = torch.rand(x.shape[0], EXTRA_CHANNELS, *x.shape[-2:], generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            out = _forward_backbone(wide, torch.cat([x, extra], 1))[-1]
            changed = _forward_backbone(wide, torch.cat([x, 1 - extra], 1))[-1]
        _expect(
            out.shape == x.shape,
            name,
            f"with in_channels={IMAGE_CHANNELS + EXTRA_CHANNELS} the output must keep "
            f"{IMAGE_CHANNELS} image channels (residual on the image channels only), got {tuple(out.shape)}",
        )
        _expect(not torch.equal(out, changed), name, "ignores the extra input channels")

    points = getattr(module, "insertion_points", {}) or {}
    _expect(
        set(points) <= set(record.insertion_points),
        name,
        f"insertion points {sorted(points)} are not all declared in its record {list(record.insertion_points)}",
    )
    seen: dict[str, int] = {}

    def recorder(point: str) -> Callable[[Tensor], Tensor]:
        def apply(features: Tensor) -> Tensor:
            seen[point] = features.shape[1]
            return features * 0.5

        return apply

    if points:
        module.eval()
        with torch.no_grad():
            plain = _forward_backbone(module, image[-1])[-1]
            guided = module(image[-1], guidance={p: recorder(p) for p in points})
        guided = guided[-1] if isinstance(guided, (list, tuple)) else guided
        _expect(
            seen == dict(points), name, f"guidance was applied at {seen} (point: channels), expected {dict(points)}"
        )
        _expect(not torch.equal(plain, guided), name, "output does not depend on guidance")


def check_prior(
    name: str,
    params: Mapping[str, Any] | None = None,
    aux: Mapping[str, Tensor] | None = None,
    insertion_points: Mapping[str, int] | None = None,
) -> None:
    """Declared channels, required inputs, guidance, gradients, determinism, state_dict."""
    record, build = _builder("prior", name, params)
    injected = {}
    if record.guidance:
        injected["insertion_points"] = dict(insertion_points or {"decoder_s1": 8, "decoder_s2": 16, "decoder_s4": 32})
    declared = build.value(record.out_channels) if isinstance(record.out_channels, str) else record.out_channels
    module = build(**injected)
    _expect(
        getattr(module, "out_channels", 0) == declared,
        name,
        f"out_channels is {getattr(module, 'out_channels', 0)!r}, the record declares {declared!r}",
    )
    for x in _images([(37, 29), (16, 16)]):
        inputs = _aux_inputs(record.requires, x, aux)
        output = module(x, inputs)
        if declared:
            channels = getattr(output, "channels", None)
            _expect(
                channels is not None and channels.shape == (x.shape[0], declared, *x.shape[-2:]),
                name,
                f"channels must be {(x.shape[0], declared, *x.shape[-2:])}, got "
                f"{None if channels is None else tuple(channels.shape)}",
            )
        for point, apply in getattr(output, "guidance", {}).items():
            _expect(point in injected.get("insertion_points", {}), name, f"guides unknown insertion point {point!r}")
            features = torch.rand(x.shape[0], injected["insertion_points"][point], 8, 8)
            _expect(apply(features).shape == features.shape, name, f"guidance at {point!r} changes the feature shape")
        training = _aux_inputs(record.training_inputs, x, aux)
        batch = {"input": x, "target": x, **inputs, **training}
        losses = module.aux_losses(output, batch) if hasattr(module, "aux_losses") else {}
        for key, value in losses.items():
            _expect(value.dim() == 0 and torch.isfinite(value), name, f"auxiliary loss {key!r} must be a finite scalar")
    x = _images([(24, 20)])[0]
    inputs = _aux_inputs(record.requires, x, aux)

    def run(m: nn.Module) -> Tensor:
        out = m(x, inputs)
        parts = [out.channels.mean()] if out.channels is not None else []
        if out.guidance:
            for point, apply in out.guidance.items():
                parts.append(apply(torch.ones(x.shape[0], injected["insertion_points"][point], 8, 8)).mean())
        return sum(parts) if parts else torch.zeros(())

    if any(p.requires_grad for p in module.parameters()):
        _check_gradients(module, lambda: run(module), name)
    _check_reproducible(lambda seed=SEED: build(seed, **injected), run, name)


def check_translator(name: str, params: Mapping[str, Any] | None = None) -> None:
    """Same-size output on odd sizes, gradients, determinism, state_dict."""
    record, build = _builder("translator", name, params)
    module = build()
    images = _images([(36, 28), (37, 29)])
    for x in images:
        out = module(x)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        _expect(out.shape == x.shape, name, f"output {tuple(out.shape)} for input {tuple(x.shape)}")

    def run(m: nn.Module) -> Tensor:
        out = m(images[0])
        return out[-1] if isinstance(out, (list, tuple)) else out

    _check_gradients(module, lambda: run(module).mean(), name)
    _check_reproducible(build, run, name)


def check_discriminator(name: str, params: Mapping[str, Any] | None = None) -> None:
    """One logit map per scale with the batch kept, gradients to its weights and to the images, determinism,
    state_dict."""
    record, build = _builder("discriminator", name, params)
    module = build()
    scales = getattr(module, "scales", None)
    _expect(isinstance(scales, int) and scales >= 1, name, f"scales must be a positive int, got {scales!r}")
    full = _images([(128, 128)])[0]  # PatchGAN needs 32 pixels at its coarsest scale
    images = [nn.functional.interpolate(full, scale_factor=0.5**k, mode="bilinear") for k in range(scales)][::-1]
    logits = module(images)
    _expect(
        isinstance(logits, (list, tuple)) and len(logits) == scales,
        name,
        f"must return one logit map per image ({scales}), got {type(logits).__name__}"
        + (f" of {len(logits)}" if isinstance(logits, (list, tuple)) else ""),
    )
    for image, logit in zip(images, logits, strict=True):
        _expect(
            logit.dim() == 4 and logit.shape[0] == BATCH and bool(torch.isfinite(logit).all()),
            name,
            f"for a {tuple(image.shape)} image, logits must be finite B x C x h x w, got {tuple(logit.shape)}",
        )
    probe = images[-1].clone().requires_grad_(True)
    module(images[:-1] + [probe])[-1].mean().backward()
    _expect(probe.grad is not None and bool(probe.grad.abs().sum() > 0), name, "no gradient reaches the images")

    def run(m: nn.Module) -> Tensor:
        return torch.cat([logit.flatten() for logit in m(images)])

    _check_gradients(module, lambda: run(module).mean(), name)
    _check_reproducible(build, run, name)


def check_loss(name: str, params: Mapping[str, Any] | None = None, aux: Mapping[str, Tensor] | None = None) -> None:
    """A finite scalar, lower for a perfect prediction than for a noisy one, finite gradients, deterministic."""
    record, build = _builder("loss", name, params)
    loss = build()
    target = _images([(73, 69)])[0]  # odd sides; a VGG perceptual loss pools its 1/4 scale 16x more: 18 x 17 -> 1 x 1
    noisy = (target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    inputs = _aux_inputs(record.requires, target, aux)

    def prediction(image: Tensor) -> Tensor | list[Tensor]:
        if not record.multiscale:
            return image
        return [nn.functional.interpolate(image, scale_factor=s, mode="bilinear") for s in (0.25, 0.5)] + [image]

    perfect = loss(prediction(target), target, **inputs)
    _expect(perfect.dim() == 0 and torch.isfinite(perfect), name, f"must return a finite scalar, got {perfect!r}")
    pred = noisy.clone().requires_grad_(True)
    value = loss(prediction(pred), target, **inputs)
    _expect(
        bool(value > perfect),
        name,
        f"a noisy prediction scores {value.item():.6g}, not above the perfect {perfect.item():.6g}",
    )
    value.backward()
    _expect(
        pred.grad is not None and bool(torch.isfinite(pred.grad).all()) and bool(pred.grad.abs().sum() > 0),
        name,
        "gradient with respect to the prediction must be finite and non-zero",
    )
    again = build()(prediction(noisy), target, **inputs)
    _expect(torch.equal(again, value.detach()), name, "is not deterministic")


def check_metric(name: str, params: Mapping[str, Any] | None = None, aux: Mapping[str, Tensor] | None = None) -> None:
    """Per-image finite scores (a ``B`` tensor or a mapping of them), a perfect output scoring no worse than a
    noisy one in the record's direction, determinism, and a one-line ``protocol``."""
    record, build = _builder("metric", name, params)
    metric = build()
    protocol = getattr(metric, "protocol", "")
    _expect(isinstance(protocol, str) and protocol.strip() and "\n" not in protocol, name, "needs a one-line protocol")
    target = _images([(48, 40)])[0]
    noisy = (target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    inputs = _aux_inputs(record.requires, noisy, aux)

    def scores(output: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            values = metric(output, target, **inputs)
        return dict(values) if isinstance(values, Mapping) else {name: values}

    perfect, degraded = scores(target), scores(noisy)
    for key, value in {**perfect, **degraded}.items():
        _expect(
            isinstance(value, Tensor) and value.shape == (BATCH,) and bool(torch.isfinite(value).all()),
            name,
            f"score {key!r} must be a finite tensor of one value per image ({BATCH}), got {value!r}",
        )
    for key in perfect:
        # no worse, not strictly better: rates such as MCR give a perfect and a mildly noisy output both 0
        better = perfect[key] >= degraded[key] if record.higher_is_better else perfect[key] <= degraded[key]
        _expect(
            bool(better.all()),
            name,
            f"{key!r} rates a perfect output {perfect[key].tolist()} and a noisy one {degraded[key].tolist()}, "
            f"but the record says {'higher' if record.higher_is_better else 'lower'} is better",
        )
    again = build()
    _expect(
        all(
            torch.equal(
                v, (lambda r: dict(r) if isinstance(r, Mapping) else {name: r})(again(noisy, target, **inputs))[k]
            )
            for k, v in degraded.items()
        ),
        name,
        "is not deterministic",
    )


def check_dataset(name: str, params: Mapping[str, Any] | None = None) -> None:
    """Build the dataset from ``params`` (pointing at data you provide): whole samples ``{"name", "input",
    "target", ...}`` of ``3 x H x W`` images in [0, 1], every auxiliary input the record provides, and training
    samples (``dataset[(index, seed, epoch)]``) that depend only on their key."""
    record, build = _builder("dataset", name, params)
    dataset = build()
    _expect(len(dataset) > 0, name, "is empty")
    for sample in (dataset[0], dataset[(0, SEED, 0)]):
        _expect(
            {"name", "input", "target"} <= set(sample),
            name,
            f"a sample needs name, input, target; got {sorted(sample)}",
        )
        for key in ("input", "target"):
            image = sample[key]
            _expect(
                isinstance(image, Tensor)
                and image.dim() == 3
                and image.shape[0] == IMAGE_CHANNELS
                and image.is_floating_point()
                and bool((image >= 0).all() and (image <= 1).all()),
                name,
                f"{key} must be a 3 x H x W float tensor in [0, 1], got {getattr(image, 'shape', image)!r}",
            )
        _expect(sample["input"].shape == sample["target"].shape, name, "input and target sizes differ")
        for key in record.provides:
            _expect(
                key in sample and sample[key].shape[-2:] == sample["input"].shape[-2:],
                name,
                f"provides {key!r}, which a sample must carry at the image's size",
            )
    first, again = dataset[(0, SEED, 0)], build()[(0, SEED, 0)]
    _expect(torch.equal(first["input"], again["input"]), name, "a training sample is not determined by its key")


def check_mask_source(name: str, params: Mapping[str, Any] | None = None) -> None:
    """An ``H x W`` map for a whole image (integer labels, or floats in [0, 1]), the same for the same image."""
    from deblurstack.data import Pair

    _, build = _builder("mask_source", name, params)
    source = build()
    image = _photo(37, 45)
    pair = Pair(name="check", input=Path("check.png"), target=Path("check.png"))
    first, second = source(image, pair), build()(image, pair)
    _expect(
        isinstance(first, np.ndarray) and first.shape == image.shape[:2],
        name,
        f"must return an H x W array {image.shape[:2]}, got {getattr(first, 'shape', first)!r}",
    )
    floats = np.issubdtype(first.dtype, np.floating)
    _expect(
        np.issubdtype(first.dtype, np.integer)
        or first.dtype == bool
        or (floats and 0 <= first.min() <= first.max() <= 1),
        name,
        f"must return an integer label map or floats in [0, 1], got {first.dtype}",
    )
    _expect(np.array_equal(first, second), name, "gives different maps for the same image")


def check_synthesizer(name: str, params: Mapping[str, Any] | None = None) -> None:
    """A blurry/sharp pair of the frames' layout from the record's number of frames, the auxiliary outputs it
    provides, a blurry image that differs from the sharp one, and the same pair for the same random seed."""
    record, build = _builder("synthesizer", name, params)
    synthesizer = build()
    count = build.value(record.frames) if isinstance(record.frames, str) else record.frames
    frames = [_photo(40, 48, shift=i) for i in range(count)]
    made = synthesizer(frames, np.random.default_rng(SEED))
    _expect(isinstance(made, Mapping) and {"input", "target"} <= set(made), name, "must return input and target")
    for key in ("input", "target"):
        array = made[key]
        _expect(
            isinstance(array, np.ndarray) and array.shape == frames[0].shape and 0 <= array.min() <= array.max() <= 1,
            name,
            f"{key} must be an H x W x 3 array in [0, 1] like the frames, got {getattr(array, 'shape', array)!r}",
        )
    for key in record.provides:
        _expect(key in made and made[key].shape == frames[0].shape[:2], name, f"provides {key!r}: an H x W array")
    _expect(not np.array_equal(made["input"], made["target"]), name, "the blurry image equals the sharp one")
    again = build()(frames, np.random.default_rng(SEED))
    _expect(np.array_equal(made["input"], again["input"]), name, "differs for the same random generator seed")


def check_trainer(name: str, params: Mapping[str, Any] | None = None) -> None:
    """The factory's parameters are typed (so config check can check them) and the trainer has ``fit(job)``; one
    that trains a network of its own (``trains_stack=False``) builds it with ``build_model()``."""
    record, build = _builder("trainer", name, params)
    untyped = [p.name for p in read_signature(build.factory).parameters.values() if p.annotation is EMPTY]
    _expect(not untyped, name, f"parameters without a type hint escape the config check: {', '.join(untyped)}")
    trainer = build()
    fit = getattr(trainer, "fit", None)
    _expect(callable(fit), name, "has no fit(job) method")
    _expect(len(inspect.signature(fit).parameters) == 1, name, "fit must take one argument, the TrainingJob")
    if not record.trains_stack:
        make = getattr(trainer, "build_model", None)
        _expect(callable(make), name, "says trains_stack=False but has no build_model() making its network")
        with torch.device("meta"):  # its type, not its weights
            _expect(isinstance(make(), nn.Module), name, "build_model() must return a torch.nn.Module")


def make_aux(name: str, image: Tensor) -> Tensor:
    """A plausible auxiliary input for ``image``: ``masks`` (integer label map B x H x W),
    ``blur_mask`` (B x 1 x H x W in {0, 1}) or ``input`` (the image itself)."""
    batch, _, height, width = image.shape
    generator = torch.Generator().manual_seed(7)
    if name == "masks":
        rows = torch.randint(0, 4, (batch, height, 1), generator=generator)
        cols = torch.randint(0, 3, (batch, 1, width), generator=generator)
        return rows * 3 + cols  # up to 12 rectangular segments
    if name == "blur_mask":
        return (torch.rand(batch, 1, height, width, generator=generator) > 0.5).float()
    if name == "input":
        return image
    raise AssertionError(f"no generator for auxiliary input {name!r}: pass aux={{{name!r}: tensor}}")


def module_sizes(multiple: int) -> list[tuple[int, int]]:
    """A size that is a multiple of ``multiple`` and one that is odd and not."""
    base = max(multiple, 8)
    return [(2 * base, 2 * base), (2 * base + 1, 3 * base - 3)]


# ---------------------------------------------------------------------- helpers


class _Build:
    """Calls a component's factory with its preset, the given params and any extra keywords."""

    def __init__(self, factory: Callable[..., Any], params: dict[str, Any]) -> None:
        self.factory, self.params = factory, params

    def __call__(self, seed: int = SEED, **extra: Any) -> Any:
        torch.manual_seed(seed)
        return self.factory(**{**self.params, **extra})

    def value(self, parameter: str) -> Any:
        """The value ``parameter`` takes: given, from the preset, or the factory default."""
        if parameter in self.params:
            return self.params[parameter]
        found = read_signature(self.factory).parameters.get(parameter)
        return None if found is None or found.required else found.default


def _builder(kind: str, name: str, params: Mapping[str, Any] | None) -> tuple[Any, _Build]:
    component, _, chosen = get_plugin_manager().resolve(kind, name)
    factory = component.load_factory()
    shadowed = shadowed_parameters(kind, read_signature(factory).parameters)
    _expect(shadowed is None, name, str(shadowed))
    return component.record, _Build(factory, {**chosen, **(params or {})})


def _aux_inputs(names: tuple[str, ...], image: Tensor, given: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    return {key: given[key] if given and key in given else make_aux(key, image) for key in names}


def _images(sizes: list[tuple[int, int]]) -> list[Tensor]:
    generator = torch.Generator().manual_seed(11)
    return [torch.rand(BATCH, IMAGE_CHANNELS, h, w, generator=generator) for h, w in sizes]


def _forward_backbone(module: nn.Module, x: Tensor) -> list[Tensor]:
    out = module(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _check_gradients(module: nn.Module, objective: Callable[[], Tensor], name: str) -> None:
    module.train()
    module.zero_grad(set_to_none=True)
    objective().backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad and p.grad is not None]
    _expect(bool(grads), name, "no parameter received a gradient")
    _expect(all(bool(torch.isfinite(g).all()) for g in grads), name, "has non-finite gradients")
    _expect(any(bool(g.abs().sum() > 0) for g in grads), name, "all gradients are zero")
    module.zero_grad(set_to_none=True)


def _check_reproducible(build: Callable[..., nn.Module], run: Callable[[nn.Module], Tensor], name: str) -> None:
    first, second = build().eval(), build().eval()
    with torch.no_grad():
        _expect(torch.equal(run(first), run(second)), name, f"two builds under seed {SEED} differ")
        buffer = io.BytesIO()
        torch.save(first.state_dict(), buffer)
        buffer.seek(0)
        other = build(seed=SEED + 1)  # equality must come from loading, not from the seed
        other.load_state_dict(torch.load(buffer, weights_only=True))
        _expect(torch.equal(run(first), run(other.eval())), name, "state_dict round trip changes the output")


def _check_residual(build: _Build, record: Any, image: Tensor, name: str) -> None:
    """With every weight zero, most layers output zero, so a residual backbone returns exactly its image channels,
    never the prior channels."""
    extra = IMAGE_CHANNELS if record.extra_channels else 0  # as many prior channels as image ones: comparable
    module = build(**({"in_channels": IMAGE_CHANNELS + extra} if extra else {})).eval()
    if not getattr(module, "residual", True):
        return
    priors = torch.rand(image.shape[0], extra, *image.shape[-2:], generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.zero_()
        out = _forward_backbone(module, torch.cat([image, priors], 1) if extra else image)[-1]
    if extra and out.shape == image.shape and torch.allclose(out, priors, atol=1e-6):
        raise AssertionError(f"{name}: takes its global residual from the prior channels, not the image channels")
    _expect(
        out.shape == image.shape and torch.allclose(out, image, atol=1e-6),
        name,
        "has no global residual on the image channels: with every weight zero the output should equal the input "
        "image (output = f(x) + x[:, :3], image_residual); set residual = False if it predicts the image directly",
    )


def _photo(height: int, width: int, shift: int = 0) -> np.ndarray:
    """A smooth RGB test picture in [0, 1] with edges (``shift`` moves it right, as a next frame would)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x = x - shift
    picture = np.stack([(x // 8 + y // 8) % 2, 0.5 + 0.5 * np.sin(x / 5), 0.5 + 0.5 * np.cos(y / 7)], -1)
    return np.clip(picture, 0, 1).astype(np.float32)


def _first_line(error: BaseException) -> str:
    return one_line(error, 200)


def _expect(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise AssertionError(f"{name}: {message}")
