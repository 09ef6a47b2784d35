"""Paired datasets: folders paired by file name, list files, the layouts of the public benchmarks, and pairs
synthesized while training."""

from deblurstack import DatasetRecord, hookimpl

_MODULE = "deblurstack.plugins.datasets.layouts"


@hookimpl
def deblurstack_datasets():
    return [
        DatasetRecord(
            name="paired_folder",
            factory=f"{_MODULE}:PairedFolder",
            summary="Blurry and sharp folders, paired by file name",
        ),
        DatasetRecord(
            name="paired_list",
            factory=f"{_MODULE}:PairedList",
            summary="Pairs listed in a text file, one 'input target' (or 'target input') line each",
        ),
        DatasetRecord(
            name="local_blur_folder",
            factory=f"{_MODULE}:LocalBlurFolder",
            summary="Blurry, sharp and blur-mask folders paired by name (LODE/LBS style)",
            provides=("blur_mask",),
        ),
        DatasetRecord(
            name="gopro",
            factory=f"{_MODULE}:GoPro",
            summary="GoPro_Large: <split>/<sequence>/{blur|blur_gamma,sharp}/ (or the flattened layout)",
            reference="Nah et al., Deep Multi-scale CNN for Dynamic Scene Deblurring, CVPR 2017",
        ),
        DatasetRecord(
            name="reds",
            factory=f"{_MODULE}:Reds",
            summary="REDS: <split>_<blur>/<clip>/<frame> vs <split>_sharp, optionally the val-300 subset",
            reference="Nah et al., NTIRE 2019 Challenge on Video Deblurring and Super-Resolution",
        ),
        DatasetRecord(
            name="realblur",
            factory=f"{_MODULE}:RealBlur",
            summary="RealBlur-J/R from its list files ('gt blur' per line)",
            reference="Rim et al., Real-World Blur Dataset for Learning and Benchmarking Deblurring, ECCV 2020",
        ),
        DatasetRecord(
            name="rsblur",
            factory=f"{_MODULE}:RSBlur",
            summary="RSBlur from its list files ('gt blur' per line)",
            reference="Rim et al., Realistic Blur Synthesis for Learning Image Deblurring, ECCV 2022",
        ),
        DatasetRecord(
            name="reloblur",
            factory=f"{_MODULE}:ReLoBlur",
            provides=("blur_mask",),
            summary="ReLoBlur: dataset/<split>/<scene>/<n>/<n>_{blur,sharp}.png with masks/ beside it",
            reference="Li et al., Real-World Deep Local Motion Deblurring, AAAI 2023",
        ),
        DatasetRecord(
            name="synthesized",
            factory="deblurstack.plugins.datasets.synthesized:Synthesized",
            summary="Pairs made while training: a synthesizer node run on sharp photos (a folder or 'skimage'), "
            "new ones every epoch; provides the synthesizer's maps",
        ),
    ]
