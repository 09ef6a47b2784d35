"""NAFNet and its Baseline (megvii-research/NAFNet), with the official configurations as presets.

Official release files (``params``/``params_ema``) load with ``checkpoint: {path, key}``; GoPro/REDS numbers
were measured with TLC (``NAFNetLocal``), which is ``tlc: {train_size: 256}`` here.
"""

from deblurstack import BackboneRecord, hookimpl

REFERENCE = "Chen et al., Simple Baselines for Image Restoration, ECCV 2022, arXiv 2204.04676"
# one guidance point per decoder level; the official layouts have 4 levels (strides 8..1)
POINTS = ("decoder_s1", "decoder_s2", "decoder_s4", "decoder_s8", "decoder_s16")

GOPRO = {"middle_blk_num": 1, "enc_blk_nums": (1, 1, 1, 28), "dec_blk_nums": (1, 1, 1, 1)}
SIDD = {"middle_blk_num": 12, "enc_blk_nums": (2, 2, 4, 8), "dec_blk_nums": (2, 2, 2, 2)}
# official readme; PSNR on uint8 RGB, NAFNet's 3-D SSIM; GoPro/REDS with TLC (train size 256), SIDD without
TLC_NOTE = "(official readme; NAFNetLocal/BaselineLocal: tlc train_size 256)"


@hookimpl
def deblurstack_backbones():
    return [
        BackboneRecord(
            name="nafnet",
            factory="deblurstack.plugins.nafnet.model:NAFNet",
            summary="NAFNet: activation-free U-Net of NAFBlocks (SimpleGate, simplified channel attention)",
            presets={
                "w32": {"width": 32, **GOPRO},
                "w64": {"width": 64, **GOPRO},
                "reds_w64": {"width": 64, **GOPRO},
                "sidd_w32": {"width": 32, **SIDD},
                "sidd_w64": {"width": 64, **SIDD},
            },
            insertion_points=POINTS,
            tlc=True,
            reported={
                "w32": f"GoPro 32.8705 dB PSNR / 0.9606 SSIM {TLC_NOTE}",
                "w64": f"GoPro 33.7103 dB PSNR / 0.9668 SSIM {TLC_NOTE}",
                "reds_w64": f"REDS val-300 29.0903 dB PSNR / 0.8671 SSIM {TLC_NOTE}",
                "sidd_w32": "SIDD 39.9672 dB PSNR / 0.9599 SSIM (official readme; denoising, no TLC)",
                "sidd_w64": "SIDD 40.3045 dB PSNR / 0.9614 SSIM (official readme; denoising, no TLC)",
            },
            reference=REFERENCE,
        ),
        BackboneRecord(
            name="nafnet_baseline",
            factory="deblurstack.plugins.nafnet.model:Baseline",
            summary="NAFNet's Baseline: the same U-Net with GELU and squeeze-and-excitation blocks",
            presets={
                "w32": {"width": 32, **GOPRO, "dw_expand": 1, "ffn_expand": 2},
                # the official GoPro width-64 config uses dw_expand 2 (options/*/GoPro/Baseline-width64.yml)
                "w64": {"width": 64, **GOPRO, "dw_expand": 2, "ffn_expand": 2},
            },
            insertion_points=POINTS,
            tlc=True,
            reported={
                "w32": f"GoPro 32.4799 dB PSNR / 0.9575 SSIM {TLC_NOTE}",
                "w64": f"GoPro 33.3960 dB PSNR / 0.9649 SSIM {TLC_NOTE}",
            },
            reference=REFERENCE,
        ),
    ]
