"""Blur synthesizers: random-trajectory camera shake (DeblurGAN), frame averaging (GoPro/REDS) of real
frames or of a simulated camera sweep, local blur of moving objects (LODE's LBS), defocus and Gaussian lens
blur, and a mixture of them with sensor noise."""

from deblurstack import SynthesizerRecord, hookimpl

#: ``lbs`` as LODE's official generator (BlurGenerator/voc_img_generator.py, move_config.py) draws it
LBS_OFFICIAL = {
    "frames": [5, 21],
    "dx": [0.0, 1.0],
    "dy": [0.0, 1.0],
    "steps": "per_frame",
    "integer_steps": True,
    "scale": [0.01, 0.01],
    "rotation": [0.3, 0.3],
    "moving_images": 2,
    "static_images": 2,
    "max_instances": 2,
    "object_scale": 1.0,
    "min_object_pixels": 1,
    "quirks": True,
}
#: the paper text's numbers (odd N in 7..13, objects rescaled by 1.2; unverified, the code does not use them),
#: the code's for the rest, without the quirks
LBS_PAPER = {**LBS_OFFICIAL, "frames": [7, 13], "object_scale": 1.2, "quirks": False}


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
        SynthesizerRecord(
            name="camera_sweep",
            factory=f"{package}.sweep:CameraSweep",
            summary="Frame averaging from one image: mean of N warps along a random pan/roll/zoom in linear space "
            "(spatially varying blur); target = the middle, unwarped frame",
            reference="averaging as in Nah et al., GoPro, CVPR 2017; the frames are warps of one still image",
            frames=1,
        ),
        SynthesizerRecord(
            name="defocus",
            factory=f"{package}.lens:Defocus",
            summary="Out-of-focus blur: a uniform disc kernel of random radius (circle of confusion) in linear space",
            reference="geometric-optics defocus model, e.g. Levin et al., Image and Depth from a Conventional Camera "
            "with a Coded Aperture, SIGGRAPH 2007",
            frames=1,
        ),
        SynthesizerRecord(
            name="gaussian_blur",
            factory=f"{package}.lens:GaussianBlur",
            summary="Gaussian point-spread function of random std in linear space (soft lens, atmospheric blur)",
            frames=1,
        ),
        SynthesizerRecord(
            name="lbs",
            factory=f"{package}.lbs:LocalBlurSynthesis",
            summary="Local blur (LODE's LBS): objects moving over a sharp background, N frames averaged in linear "
            "light; target = the middle frame, blur_mask = the moving objects' footprints",
            reference="Wang et al., LODE: Deep Local Deblurring and A New Benchmark, arXiv 2109.09149 "
            "(official generator: komejisatori/BladeNet BlurGenerator)",
            frames=1,
            provides=("blur_mask",),
            presets={"official": LBS_OFFICIAL, "paper": LBS_PAPER},
        ),
        SynthesizerRecord(
            name="mixed",
            factory=f"{package}.mixed:Mixed",
            summary="A mixture of blur families: one synthesizer node drawn per pair (or none: sharp), "
            "then Poisson shot and Gaussian noise",
            frames=1,
        ),
    ]
