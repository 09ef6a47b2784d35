"""Image-quality metrics: PSNR, SSIM, LPIPS, SAM-Deblur's mode collapse, RealBlur's aligned scores and the
local-deblurring scores inside and outside the blur mask (BladeNet/LODE, ReLoBlur/LBAG)."""

from deblurstack import MetricRecord, hookimpl

_LOCAL = (
    "BladeNet/LODE eval.py (Wang et al., LODE: Deep Local Deblurring and A New Benchmark, arXiv 2109.09149) "
    "for protocol official; ReLoBlur/LBAG (Li et al., Real-World Deep Local Motion Deblurring, AAAI 2023) "
    "for protocol mask_area"
)


@hookimpl
def deblurstack_metrics():
    module = "deblurstack.plugins.metrics"
    return [
        MetricRecord(
            name="psnr",
            factory=f"{module}.fidelity:PSNR",
            summary="PSNR on uint8-rounded RGB (or BT.601 Y), peak 255, as BasicSR/NAFNet calculate_psnr",
            reference="BasicSR / NAFNet basicsr/metrics/psnr_ssim.py (calculate_psnr)",
        ),
        MetricRecord(
            name="ssim",
            factory=f"{module}.ssim:SSIM",
            summary="SSIM on uint8-rounded images: per-channel 11x11 Gaussian (MATLAB/BasicSR) or NAFNet's 3-D one",
            reference="Wang et al., Image Quality Assessment: From Error Visibility to Structural Similarity, "
            "IEEE TIP 2004; NAFNet calculate_ssim (ssim3d) for variant gaussian3d",
        ),
        MetricRecord(
            name="lpips",
            factory=f"{module}.perceptual:LPIPS",
            summary="LPIPS v0.1 (lpips package, AlexNet by default); backbone weights from a local file",
            reference="Zhang et al., The Unreasonable Effectiveness of Deep Features as a Perceptual Metric, CVPR 2018",
            higher_is_better=False,
        ),
        MetricRecord(
            name="mcr",
            factory=f"{module}.fidelity:ModeCollapse",
            summary="Mode collapse per image: 1 if the output's PSNR is over 3 dB below the input's; mean = MCR",
            reference="Li et al., SAM-Deblur: Let Segment Anything Boost Image Deblurring, ICASSP 2024",
            requires=("input",),
            higher_is_better=False,
        ),
        MetricRecord(
            name="realblur",
            factory=f"{module}.realblur:RealBlurAligned",
            summary="RealBlur/RSBlur PSNR and SSIM after intensity matching and ECC homography alignment",
            reference="Rim et al., Real-World Blur Dataset for Learning and Benchmarking Deblurring Algorithms, "
            "ECCV 2020 (evaluation_RealBlur_ecc.py)",
        ),
        MetricRecord(
            name="local_psnr",
            factory=f"{module}.local:LocalPSNR",
            summary="PSNR inside (in) and outside (out) the blur mask: BladeNet's whole-image or ReLoBlur's area mean",
            reference=_LOCAL,
            requires=("blur_mask",),
        ),
        MetricRecord(
            name="local_ssim",
            factory=f"{module}.local:LocalSSIM",
            summary="SSIM inside (in) and outside (out) the blur mask: BladeNet's zeroed image or ReLoBlur's area mean",
            reference=_LOCAL,
            requires=("blur_mask",),
        ),
    ]
