"""Blur2Blur (Pham et al., CVPR 2024): a translator from a camera's unknown blur to the blur a frozen deblurrer
knows, its PatchGAN discriminator, VGG16 perceptual loss, unpaired data, known-blur generation (KernelWizard,
any synthesizer, or the known images) and the adversarial trainer.
"""

from deblurstack import (
    DatasetRecord,
    DiscriminatorRecord,
    LossRecord,
    TrainerRecord,
    TranslatorRecord,
    hookimpl,
)

_PACKAGE = "deblurstack.plugins.blur2blur"
_PAPER = (
    "Pham et al., Blur2Blur: Blur Conversion for Unsupervised Image Deblurring on Unknown Domains, CVPR 2024, "
    "arXiv 2403.16205; code github.com/VinAIResearch/Blur2Blur"
)


@hookimpl
def deblurstack_translators():
    return [
        TranslatorRecord(
            name="blur2blur",
            factory=f"{_PACKAGE}.translator:Blur2Blur",
            summary="Unknown blur -> known blur: any backbone as generator (official MIMO-UNet), coarse-to-fine scales",
            presets={"mimo_unet_plus": {"generator": {"type": "mimo_unet.plus"}}},
            reference=_PAPER,
        )
    ]


@hookimpl
def deblurstack_discriminators():
    return [
        DiscriminatorRecord(
            name="patchgan",
            factory=f"{_PACKAGE}.discriminator:PatchGAN",
            summary="PatchGAN (70x70, 3 layers, ndf 64) with shared weights at every scale; official key names",
            presets={"official_default": {"norm": "batch"}},
            reference=_PAPER,
        )
    ]


@hookimpl
def deblurstack_losses():
    return [
        LossRecord(
            name="vgg16_perceptual",
            factory=f"{_PACKAGE}.losses:VGG16Perceptual",
            summary="Blur2Blur's VGG16 perceptual L1 (features 7, 14, 17, 21, 24; weights 1/32 .. 1), every scale",
            multiscale=True,
            reference=_PAPER,
        )
    ]


@hookimpl
def deblurstack_datasets():
    return [
        DatasetRecord(
            name="unpaired_folder",
            factory=f"{_PACKAGE}.unpaired:UnpairedFolder",
            summary="Blur2Blur's layout: trainA unknown blurry, trainB unknown sharp, trainC/trainD known pairs",
            reference=_PAPER,
        ),
        DatasetRecord(
            name="unpaired",
            factory=f"{_PACKAGE}.unpaired:Unpaired",
            summary="Blur2Blur's roles from any datasets: an unknown-domain paired set split in two, known pairs",
            reference=_PAPER,
        ),
    ]


@hookimpl
def deblurstack_trainers():
    return [
        TrainerRecord(
            name="adversarial",
            factory=f"{_PACKAGE}.trainer:AdversarialTrainer",
            summary="Translator vs discriminator (hinge/vanilla/LSGAN, gradient penalty, reconstruction to the "
            "input), the deblurrer frozen; any batch size, torchrun",
            trains_stack_losses=False,
            reference=_PAPER,
        ),
        TrainerRecord(
            name="kernel_wizard",
            factory=f"{_PACKAGE}.kernel_training:KernelWizardTrainer",
            summary="KernelWizard on known pairs (re-blur each sharp image with its pair's own blur code; "
            "Charbonnier, Adam 1e-4), for the known_blur kernel_wizard generation; no stack",
            trains_stack_losses=False,
            trains_stack=False,
            reference="Tran et al., Explore Image Deblurring via Encoded Blur Kernel Space, CVPR 2021; code "
            "github.com/VinAIResearch/blur-kernel-space-exploring",
        ),
    ]
