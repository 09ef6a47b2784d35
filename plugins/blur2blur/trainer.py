"""The adversarial trainer: Blur2Blur's schedule (``train.py`` and ``models/blur2blur_model.py`` of
VinAIResearch/Blur2Blur), at any batch size and under torchrun.

Per step, on a batch of unknown-domain blurry images ``x`` (and what the known-blur generation reads):

1. ``real`` = the known-blur generation's images, at the translator's scales (bilinear x1/4, x1/2, x1);
   ``fake`` = ``translator(x)``, its coarse-to-fine outputs;
2. ``discriminator_steps`` discriminator steps on ``real`` against ``fake`` (detached): the GAN loss plus the
   gradient penalty on mixed samples at full scale;
3. one translator step with the discriminator frozen: the GAN loss of ``fake`` plus the reconstruction losses
   of ``fake`` against ``x`` itself at every scale (official: VGG16 perceptual, weight 0.8). The deblurrer is
   never run in training: it stays frozen and bit-identical, and only validation runs the whole chain.

Both Adams (official lr 2e-4, betas (0.5, 0.999)) keep their rate for the first ``decay_from`` of the steps, then
decay it linearly to 0 (official: 100 epochs, then 200 of decay, stepped per epoch; here per step). The
discriminator is not part of the stack: the loop saves it (``discriminator``) and both optimizers in every
checkpoint. The gradient penalty's mixing weights and the synthesizer's random numbers come from the run seed, the
step and each sample's position in the step's global batch, so resumes are exact without more state, and two
processes at batch b draw what one process draws at batch 2b. Under torchrun, gradients are averaged over the
ranks after each backward (``average_gradients``): DDP's reducer does not allow the penalty's double backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from deblurstack import TrainingError, TrainingSplit, load_weights
from deblurstack.compose import ComponentNode, ResolvedConfig, as_node, named_nodes, resolve_node
from deblurstack.engine.distributed import average_gradients, broadcast_buffers
from deblurstack.engine.loop import LoopOptions, TrainingLoop
from deblurstack.engine.supervised import AdamBeta
from deblurstack.engine.training import TrainingJob
from deblurstack.plugins.blur2blur.kernel_wizard import crop_problem
from deblurstack.plugins.blur2blur.known_blur import KnownBlurNode, Synthesizer
from deblurstack.plugins.blur2blur.losses import (
    discriminator_loss,
    downsample_pyramid,
    generator_loss,
    gradient_penalty,
)

Rate = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


@dataclass(kw_only=True)
class AdversarialTrainer(LoopOptions):
    """Train the stack's translator against a discriminator on ``data.train``; the rest of the stack stays frozen.

    Args:
        batch_size: samples per step on each process (official 1).
        num_workers: data-loading processes per training process.
        lr: the translator's Adam learning rate (official 2e-4).
        discriminator_lr: the discriminator's; unset: ``lr``.
        betas: both Adams' betas (official (0.5, 0.999)).
        decay_from: share of the steps at constant rate before the linear decay to 0 (official 100 of 300 epochs).
        discriminator_steps: discriminator steps per translator step, on the same batch (official 1).
        gan_mode: ``hinge`` (official), ``vanilla`` (cross-entropy) or ``lsgan`` (least squares).
        gp_weight: weight of the gradient penalty (official 1e-4); 0 turns it off.
        discriminator: a discriminator node (``{type: patchgan, norm: instance}``); its ``scales`` must be the
            translator's (1 for a translator that returns one image); its ``checkpoint`` (an official
            ``latest_net_D.pth``) is loaded to start from.
        reconstruction: loss nodes between the translator's outputs and its input (each with its ``weight``).
        known_blur: how the real images are made: ``{type: synthesizer, synthesizer: {type: motion_blur}}``,
            ``{type: kernel_wizard, weights: GOPRO_woVAE.pth}`` or ``{type: known_images}``.
        grad_clip: maximum global gradient norm of each network; unset for none.
    """

    batch_size: Annotated[int, Field(ge=1)] = 1
    num_workers: Annotated[int, Field(ge=0)] = 0
    lr: Rate = 2e-4
    discriminator_lr: Rate | None = None
    betas: tuple[AdamBeta, AdamBeta] = (0.5, 0.999)
    decay_from: Annotated[float, Field(ge=0.0, le=1.0)] = 1 / 3
    discriminator_steps: Annotated[int, Field(ge=1)] = 1
    gan_mode: Literal["hinge", "vanilla", "lsgan"] = "hinge"
    gp_weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1e-4
    discriminator: ComponentNode("discriminator", options=("checkpoint",)) = "patchgan"
    reconstruction: tuple[ComponentNode("loss", options=("weight",)), ...] = (
        {"type": "vgg16_perceptual", "weight": 0.8},
    )
    known_blur: KnownBlurNode = Synthesizer(type="synthesizer")
    grad_clip: Rate | None = None

    def __post_init__(self) -> None:
        self.discriminator = resolve_node("discriminator", as_node(self.discriminator)).to_dict()

    # ------------------------------------------------------------------ what the config check asks

    def training_splits(self) -> list[TrainingSplit]:
        return [TrainingSplit("train", "data.train", False, False, ("translator",), stack_forward=False)]

    def check_config(self, resolved: ResolvedConfig) -> list[tuple[str, str]]:
        """A translator to train, a frozen deblurrer, matching scales, crops KernelWizard can take."""
        problems = []
        translator = resolved.translator
        # a missing or frozen translator: the config check reports it, since training_splits names it as trained
        if (
            translator is not None
            and "scales" in translator.params
            and translator.params["scales"] != self.discriminator.get("scales")
        ):
            problems.append(
                (
                    "train.discriminator.scales",
                    f"is {self.discriminator.get('scales')}, but the translator returns "
                    f"{translator.params['scales']} scales (stack.translator.scales): they must match",
                )
            )
        for name, node in resolved.model_nodes():
            if name != "translator" and not node.options.get("frozen"):
                problems.append(
                    (
                        f"{node.keypath}.frozen",
                        "the adversarial trainer trains only the translator; the deblurrer and its priors stay as "
                        "their checkpoints have them: set frozen: true",
                    )
                )
        dataset = resolved.datasets.get("train")
        if self.known_blur.type == "kernel_wizard" and dataset is not None:
            if problem := crop_problem(dataset.params.get("patch_size"), self.known_blur.network):
                problems.append(("data.train.patch_size", f"{problem} (known_blur kernel_wizard)"))
        return problems

    # ------------------------------------------------------------------ training

    def fit(self, job: TrainingJob) -> None:
        stack, distributed = job.stack, job.distributed
        device = distributed.device
        translator = getattr(stack, "translator", None)
        generator_parameters = [p for p in translator.parameters() if p.requires_grad] if translator else []
        if not generator_parameters:
            raise TrainingError("the adversarial trainer trains the translator, and the stack has none to train")
        node = resolve_node("discriminator", self.discriminator, "train.discriminator")
        discriminator = node.build().to(device)
        if checkpoint := node.options.get("checkpoint"):
            load_weights(discriminator, checkpoint["path"], key=checkpoint["key"], strict=checkpoint["strict"])
        discriminator_parameters = [p for p in discriminator.parameters() if p.requires_grad]
        known_blur = self.known_blur.build().to(device)
        reconstruction = [
            (f"reconstruction/{name}", float(node.options["weight"]), node.record.multiscale, node.build().to(device))
            for name, node in named_nodes("loss", self.reconstruction, "train.reconstruction").items()
        ]
        optimizers = {
            "generator": torch.optim.Adam(generator_parameters, lr=self.lr, betas=self.betas),
            "discriminator": torch.optim.Adam(
                discriminator_parameters, lr=self.discriminator_lr or self.lr, betas=self.betas
            ),
        }
        schedulers = {name: self._linear_decay(optimizer) for name, optimizer in optimizers.items()}
        state = {f"optimizer.{n}": o for n, o in optimizers.items()} | {
            f"scheduler.{n}": s for n, s in schedulers.items()
        }
        state["discriminator"] = discriminator
        scales = discriminator.scales
        if self.channels_last:  # the loop converts what it saves; these run every step too
            for module in (known_blur, *(loss for *_, loss in reconstruction)):
                module.to(memory_format=torch.channels_last)
        with TrainingLoop(job, self, state) as loop:
            for batch in loop.batches(job.dataset("train"), self.batch_size, self.num_workers):
                missing = [key for key in ("input", *known_blur.needs) if key not in batch]
                if missing:
                    raise TrainingError(
                        f"known_blur {self.known_blur.type!r} reads {', '.join(missing)}, which data.train does not "
                        f"give (the unpaired datasets give sharp always, known_blur/known_sharp with known pairs)"
                    )
                # sample i of this rank is sample i * world + rank of the step's global batch (the sampler deals
                # round-robin), so its random numbers, drawn by global position, are those one process would draw
                world, rank = distributed.world_size, distributed.rank
                positions = [i * world + rank for i in range(batch["input"].shape[0])]
                entropy = (job.seed, loop.step)
                with torch.no_grad():
                    real = downsample_pyramid(known_blur(batch, entropy, positions), scales)
                fake = translator(batch["input"])
                fake = [fake] if isinstance(fake, Tensor) else list(fake)  # a translator may return one image
                if len(fake) != scales:
                    raise TrainingError(f"the translator returns {len(fake)} scales, the discriminator judges {scales}")
                for k in range(self.discriminator_steps):
                    detached = [f.detach() for f in fake]
                    mixing = (*entropy, k)  # each discriminator step mixes its own penalty samples
                    terms_d = self._discriminator_terms(discriminator, real, detached, mixing, positions, world)
                    self._step(optimizers["discriminator"], sum(terms_d.values()), discriminator_parameters, job)
                    broadcast_buffers(discriminator, distributed)
                discriminator.requires_grad_(False)
                terms = {"gan": generator_loss(discriminator(fake), self.gan_mode)}
                for name, weight, multiscale, loss in reconstruction:
                    terms[name] = weight * loss(fake if multiscale else fake[-1], batch["input"])
                total = sum(terms.values())
                loop.check_finite(total, terms)
                self._step(optimizers["generator"], total, generator_parameters, job)
                broadcast_buffers(translator, distributed)
                discriminator.requires_grad_(True)
                for scheduler in schedulers.values():
                    scheduler.step()
                logs = {"loss": total.item(), **{f"loss/{k}": v.item() for k, v in terms.items()}}
                logs |= {f"loss_d/{k}": v.item() for k, v in terms_d.items()}
                loop.step_done({**logs, "lr": schedulers["generator"].get_last_lr()[0]})

    def _discriminator_terms(
        self,
        discriminator: nn.Module,
        real: list[Tensor],
        fake: list[Tensor],
        entropy: tuple[int, ...],
        positions: list[int],
        world: int,
    ) -> dict[str, Tensor]:
        terms = {"gan": discriminator_loss(discriminator(real), discriminator(fake), self.gan_mode)}
        if self.gp_weight:  # the mixing weights of the step's global batch; this rank's at its positions
            every = torch.rand(len(positions) * world, generator=torch.Generator().manual_seed(_mix(entropy)))
            alpha = every[positions].view(-1, 1, 1, 1).to(real[-1].device)
            terms["gp"] = gradient_penalty(discriminator, real[-1], fake[-1], alpha, self.gp_weight)
        return terms

    def _step(
        self, optimizer: torch.optim.Optimizer, loss: Tensor, parameters: list[nn.Parameter], job: TrainingJob
    ) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(parameters, job.distributed)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
        optimizer.step()

    def _linear_decay(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        start = round(self.decay_from * self.iterations)
        span = self.iterations - start + 1
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - max(0, step - start) / span)


def _mix(entropy: tuple[int, ...]) -> int:
    """A torch seed from several integers (numpy's SeedSequence mixes them)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, np.uint64)[0] >> 1)


__all__ = ["AdversarialTrainer"]
