"""MIMO-UNet and MIMO-UNet+ (multi-input multi-output U-Net, three output scales) and their training loss."""

from deblurstack import BackboneRecord, LossRecord, hookimpl

REFERENCE = (
    "Cho et al., Rethinking Coarse-to-Fine Approach in Single Image Deblurring (MIMO-UNet), ICCV 2021, "
    "arXiv 2108.05054; code github.com/chosj95/MIMO-UNet"
)


@hookimpl
def deblurstack_backbones():
    return [
        BackboneRecord(
            name="mimo_unet",
            factory="deblurstack.plugins.mimo_unet.model:MIMOUNet",
            summary="MIMO-UNet(+): one U-Net, inputs and residual outputs at 1/4, 1/2, 1; official state_dict keys",
            presets={
                "base": {"num_res": 8},  # MIMO-UNet, 6.81 M parameters
                "plus": {"num_res": 20, "dropout": 0.1},  # MIMO-UNet+, 16.11 M parameters
            },
            insertion_points=("decoder_s1", "decoder_s2", "decoder_s4"),
            multiscale=True,
            reported={
                "base": "GoPro 31.73 dB PSNR / 0.951 SSIM (official README)",
                "plus": "GoPro 32.45 dB PSNR / 0.957 SSIM; MIMO-UNet++ (32.68 / 0.959) is MIMO-UNet+ "
                "averaged over a 4-rotation (0/90/180/270) self-ensemble at test time, not another network",
            },
            reference=REFERENCE,
        )
    ]


@hookimpl
def deblurstack_losses():
    return [
        LossRecord(
            name="mimo_unet",
            factory="deblurstack.plugins.mimo_unet.loss:MIMOUNetLoss",
            summary="MIMO-UNet's loss: L1 per scale + 0.1 x L1 on 2-D FFT real/imag parts, bilinear targets",
            multiscale=True,
            reference=REFERENCE,
        )
    ]
