"""Blur synthesizers: random-trajectory camera shake (DeblurGAN) and frame averaging (GoPro/REDS)."""

from deblurstack import SynthesizerRecord, hookimpl


@hookimpl
def deblurstack_synthesizers():
    package = "deblurstack.plugins.synthesis"
    return [
        SynthesizerRecord(
            name="motion_blur",
            factory=f"{package}.motion_blur:MotionBlur",
            summary="Camera shake: a random-trajectory kernel (sum 1) convolved with one sharp image in linear space",
            reference="Boracchi & Foi, Modeling the Performance of Image Restoration from Motion Blur, IEEE TIP 2012; "
            "trajectory generator of Kupyn et al., DeblurGAN, CVPR 2018",
            frames=1,
        ),
        SynthesizerRecord(
            name="frame_average",
            factory=f"{package}.frame_average:FrameAverage",
            summary="GoPro/REDS-style blur: mean of N consecutive sharp frames in linear space; target = middle frame",
            reference="Nah et al., Deep Multi-scale CNN for Dynamic Scene Deblurring (GoPro), CVPR 2017; "
            "Nah et al., NTIRE 2019 Challenge on Video Deblurring (REDS)",
            frames="frames",
        ),
    ]
