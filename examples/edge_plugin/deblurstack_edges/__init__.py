"""deblurstack-edges: registers one prior and one loss. Importing this module imports no torch."""

from deblurstack import LossRecord, PriorRecord, hookimpl


@hookimpl
def deblurstack_priors():
    return [
        PriorRecord(
            name="sobel_edges",
            factory="deblurstack_edges.prior:SobelEdges",
            summary="Sobel gradient magnitude of the luma, appended as one channel",
            out_channels=1,
        )
    ]


@hookimpl
def deblurstack_losses():
    return [
        LossRecord(
            name="gradient_l1",
            factory="deblurstack_edges.loss:GradientL1",
            summary="L1 between horizontal and vertical differences of prediction and target",
        )
    ]
