"""Pixel losses: L1, Charbonnier and NAFNet's PSNR loss."""

from deblurstack import LossRecord, hookimpl


@hookimpl
def deblurstack_losses():
    module = "deblurstack.plugins.losses.pixel"
    return [
        LossRecord(name="l1", factory=f"{module}:L1Loss", summary="Mean absolute error"),
        LossRecord(
            name="charbonnier",
            factory=f"{module}:CharbonnierLoss",
            summary="Charbonnier: mean of sqrt(diff^2 + eps^2), a smooth L1",
        ),
        LossRecord(
            name="psnr",
            factory=f"{module}:PSNRLoss",
            summary="NAFNet's PSNR loss: -PSNR per image (peak 1), averaged; negative while training",
            reference="Chen et al., Simple Baselines for Image Restoration (NAFNet), ECCV 2022",
        ),
    ]
