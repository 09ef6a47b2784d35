"""A U-Net whose encoder is any timm model with ``features_only``: timm's architectures as deblurring backbones."""

from deblurstack import BackboneRecord, hookimpl


@hookimpl
def deblurstack_backbones():
    return [
        BackboneRecord(
            name="timm_unet",
            factory="deblurstack.plugins.timm_unet.model:TimmUNet",
            summary="U-Net decoder on a timm encoder (features_only); pretrained weights only from a local file",
            presets={
                "resnet18": {"encoder": "resnet18"},
                "efficientnet_b0": {"encoder": "efficientnet_b0"},
                "convnext_nano": {"encoder": "convnext_nano"},
            },
            insertion_points=("decoder_s1", "decoder_s2", "decoder_s4", "decoder_s8", "decoder_s16"),
            reference="timm (Wightman, PyTorch Image Models) encoders with a U-Net decoder (Ronneberger et al. 2015)",
        )
    ]
