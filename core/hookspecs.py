"""Hook specifications of deblurstack: the whole extension API, and nothing else.

Registration hooks take no arguments and return a list of records (see ``deblurstack.records``);
the registry collects them from every plugin, rejects duplicate names and imports a factory only
when a component is built or inspected (never for listing). Lifecycle hooks are called by
trainers at a few run events; their return values are ignored. Implementations may accept
fewer arguments than a spec lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from deblurstack.markers import hookspec

if TYPE_CHECKING:
    from deblurstack.records import (
        BackboneRecord,
        DatasetRecord,
        DiscriminatorRecord,
        LossRecord,
        MaskSourceRecord,
        MetricRecord,
        PriorRecord,
        SynthesizerRecord,
        TrainerRecord,
        TranslatorRecord,
    )
    from deblurstack.run import RunState, Sample


# ---------------------------------------------------------------- registration hooks


@hookspec
def deblurstack_backbones() -> Sequence[BackboneRecord]:
    """Register backbones: networks that map a blurry image (plus prior channels) to a sharp one.

    Called once per plugin when the registry is first asked for backbones. The factory is
    called with the YAML parameters (and ``in_channels`` set by the builder when priors add
    channels) and must return a module following ``deblurstack.Backbone``.

    :return: a list of :class:`~deblurstack.records.BackboneRecord`.

    Example::

        @hookimpl
        def deblurstack_backbones():
            return [BackboneRecord(name="tinynet", factory="my_pkg.tinynet:TinyNet",
                                   summary="Two-layer residual CNN", presets={"w8": {"width": 8}})]
    """


@hookspec
def deblurstack_priors() -> Sequence[PriorRecord]:
    """Register priors: modules that derive channels or backbone guidance from the blurry image.

    Called once per plugin when the registry is first asked for priors. A prior that reads an
    auxiliary input (a SAM label map, say) names it in ``requires``; the builder then checks that
    the data section supplies it.

    :return: a list of :class:`~deblurstack.records.PriorRecord`.

    Example::

        @hookimpl
        def deblurstack_priors():
            return [PriorRecord(name="sam_map", factory="my_pkg.map:MaskAveragePooling",
                                summary="Mask average pooling over SAM segments",
                                out_channels="seg_channels", requires=("masks",))]
    """


@hookspec
def deblurstack_translators() -> Sequence[TranslatorRecord]:
    """Register blur translators: image-to-image modules applied before priors and backbone.

    Called once per plugin when the registry is first asked for translators. A translator maps
    an image with unknown blur into the blur domain of a (usually frozen) backbone.

    :return: a list of :class:`~deblurstack.records.TranslatorRecord`.

    Example::

        @hookimpl
        def deblurstack_translators():
            return [TranslatorRecord(name="blur2blur", factory="my_pkg.b2b:Blur2Blur",
                                     summary="Unknown-to-known blur translation (CVPR 2024)")]
    """


@hookspec
def deblurstack_discriminators() -> Sequence[DiscriminatorRecord]:
    """Register discriminators: networks an adversarial trainer trains to tell real images from made ones.

    Called once per plugin when the registry is first asked for discriminators. A trainer builds one from its
    YAML node (``train.discriminator: {type: patchgan}``), keeps it outside the stack and saves it in its
    checkpoints. The factory returns a module following ``deblurstack.Discriminator``: ``forward(images)``
    takes a coarse-to-fine list of ``scales`` images and returns one logit map per image.

    :return: a list of :class:`~deblurstack.records.DiscriminatorRecord`.

    Example::

        import torch
        from torch import nn
        from deblurstack import Discriminator, DiscriminatorRecord, hookimpl

        class TinyCritic(Discriminator):
            def __init__(self, width: int = 16, scales: int = 1):
                super().__init__()
                self.scales = scales
                self.body = nn.Sequential(nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 1, 3, 1, 1))

            def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
                return [self.body(image) for image in images]

        @hookimpl
        def deblurstack_discriminators():
            return [DiscriminatorRecord(name="tiny_critic", factory=TinyCritic, summary="Two-layer patch critic")]
    """


@hookspec
def deblurstack_losses() -> Sequence[LossRecord]:
    """Register losses. The stack multiplies each by its YAML ``weight`` and sums them.

    Called once per plugin when the registry is first asked for losses. The factory returns a
    module whose forward takes ``(prediction, target, **aux)`` and returns a scalar tensor.

    :return: a list of :class:`~deblurstack.records.LossRecord`.

    Example::

        @hookimpl
        def deblurstack_losses():
            return [LossRecord(name="l1", factory="torch.nn:L1Loss", summary="Mean absolute error")]
    """


@hookspec
def deblurstack_datasets() -> Sequence[DatasetRecord]:
    """Register datasets: sources of samples ``{"input", "target", "name", ...aux}``.

    Called once per plugin when the registry is first asked for datasets.

    :return: a list of :class:`~deblurstack.records.DatasetRecord`.

    Example::

        @hookimpl
        def deblurstack_datasets():
            return [DatasetRecord(name="reloblur", factory="my_pkg.data:ReLoBlur",
                                  summary="ReLoBlur pairs with local blur masks",
                                  provides=("blur_mask",))]
    """


@hookspec
def deblurstack_metrics() -> Sequence[MetricRecord]:
    """Register image-quality metrics used by validation and ``deblurstack test``.

    Called once per plugin when the registry is first asked for metrics.

    :return: a list of :class:`~deblurstack.records.MetricRecord`.

    Example::

        @hookimpl
        def deblurstack_metrics():
            return [MetricRecord(name="psnr", factory="my_pkg.metrics:PSNR",
                                 summary="PSNR on uint8-rounded RGB")]
    """


@hookspec
def deblurstack_mask_sources() -> Sequence[MaskSourceRecord]:
    """Register mask sources: per-image auxiliary inputs (segmentations, label maps).

    Called once per plugin when the registry is first asked for mask sources. A dataset node
    selects one per auxiliary input under its ``aux`` key.

    :return: a list of :class:`~deblurstack.records.MaskSourceRecord`.

    Example::

        @hookimpl
        def deblurstack_mask_sources():
            return [MaskSourceRecord(name="felzenszwalb", factory="my_pkg.masks:Felzenszwalb",
                                     summary="Weight-free graph segmentation", provides=("masks",))]
    """


@hookspec
def deblurstack_trainers() -> Sequence[TrainerRecord]:
    """Register trainers: training schedules (supervised, alternating, adversarial).

    Called once per plugin when the registry is first asked for trainers.

    :return: a list of :class:`~deblurstack.records.TrainerRecord`.

    The record's factory takes the ``train:`` section's parameters and returns an object with
    ``fit(job: TrainingJob) -> None`` (``deblurstack.engine.training``). ``fit`` trains ``job.stack`` for the
    configured steps, calls the lifecycle hooks below, validates, writes checkpoints that resume the run
    bit-identically (weights, every optimizer, every random state) and resumes from ``job.resume_from``.
    Build it on :class:`deblurstack.engine.loop.TrainingLoop`, which does all of that around your own step;
    subclass :class:`~deblurstack.engine.loop.LoopOptions` for its YAML options (``iterations``, ``val_every``,
    ``save_every``, ``ema_decay``, ...). ``config check`` builds the trainer and, where it defines them, asks
    ``training_splits()`` what it trains on and ``check_config(resolved)`` for problems of the whole config
    (see :class:`~deblurstack.records.TrainerRecord`). A trainer that differs from ``supervised`` only in what it
    minimises subclasses :class:`deblurstack.engine.supervised.SupervisedTrainer` and overrides ``loss_step``; one
    that trains a network of its own instead of a stack says ``trains_stack=False`` in its record and defines
    ``build_model()`` (Blur2Blur's ``kernel_wizard``).

    Example::

        from dataclasses import dataclass

        import torch
        from torch.nn.parallel import DistributedDataParallel
        from deblurstack import TrainerRecord, hookimpl
        from deblurstack.engine.loop import LoopOptions, TrainingLoop
        from deblurstack.engine.training import LossStep, TrainingJob

        @dataclass(kw_only=True)
        class PlainTrainer(LoopOptions):
            batch_size: int = 4
            lr: float = 1e-3

            def fit(self, job: TrainingJob) -> None:
                optimizer = torch.optim.Adam(job.stack.parameters(), lr=self.lr)
                with TrainingLoop(job, self, state={"optimizer": optimizer}) as loop:
                    loss_of = LossStep(job.stack)
                    if job.distributed.enabled:  # under torchrun: the ranks' gradients are averaged
                        loss_of = DistributedDataParallel(loss_of)
                    for batch in loop.batches(job.dataset("train"), self.batch_size):
                        total, terms = loss_of(batch)
                        loop.check_finite(total, terms)
                        optimizer.zero_grad()
                        total.backward()
                        optimizer.step()
                        loop.step_done({"loss": total.item()})

        @hookimpl
        def deblurstack_trainers():
            return [TrainerRecord(name="plain", factory=PlainTrainer, summary="Adam on the stack's losses")]
    """


@hookspec
def deblurstack_synthesizers() -> Sequence[SynthesizerRecord]:
    """Register blur synthesizers: functions that make a blurry/sharp pair from sharp frames.

    Called once per plugin when the registry is first asked for synthesizers; ``deblurstack
    synth SRC OUT --type NAME`` runs one over a folder of sharp images (or of frame sequences).

    :return: a list of :class:`~deblurstack.records.SynthesizerRecord`.

    Example::

        @hookimpl
        def deblurstack_synthesizers():
            return [SynthesizerRecord(name="defocus", factory="my_pkg.synth:DefocusBlur",
                                      summary="Disc kernels of random radius in linear space")]
    """


# ---------------------------------------------------------------- lifecycle hooks


@hookspec
def deblurstack_run_start(run: RunState) -> None:
    """A training run begins (after the model is built and any resume state is restored).

    :param run: the run: ``run.directory``, ``run.config`` (resolved), ``run.model``, ``run.step``.

    Example::

        @hookimpl
        def deblurstack_run_start(run):
            (run.directory / "notes.txt").write_text(f"started at step {run.step}\\n")
    """


@hookspec
def deblurstack_train_step_end(run: RunState, logs: Mapping[str, float]) -> None:
    """An optimizer step has finished; ``run.step`` counts the steps done so far.

    Loggers record ``logs`` here and EMA plugins update their averages of ``run.model``.

    :param run: the run.
    :param logs: scalar values of this step, e.g. ``{"loss": 0.12, "loss/l1": 0.1, "lr": 1e-3}``.

    Example::

        @hookimpl
        def deblurstack_train_step_end(run, logs):
            if run.step % 100 == 0:
                print(run.step, logs["loss"])
    """


@hookspec
def deblurstack_validation_end(run: RunState, metrics: Mapping[str, float], samples: Sequence[Sample]) -> None:
    """A validation pass has finished.

    :param run: the run.
    :param metrics: mean metric values, e.g. ``{"val/psnr": 28.1}``.
    :param samples: a few validation images (``name``, ``input``, ``output``, ``target`` tensors, CHW in [0, 1]),
        for image grids.

    Example::

        @hookimpl
        def deblurstack_validation_end(run, metrics, samples):
            for sample in samples:
                torchvision.utils.save_image([sample.input, sample.output, sample.target],
                                             run.directory / f"{sample.name}_{run.step}.png")
    """


@hookspec
def deblurstack_run_end(run: RunState, status: str) -> None:
    """A training run ends.

    :param run: the run.
    :param status: ``"completed"``, ``"failed"`` or ``"interrupted"``.

    Example::

        @hookimpl
        def deblurstack_run_end(run, status):
            print(f"{run.directory.name}: {status} after {run.step} steps")
    """
