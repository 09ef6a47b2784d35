"""Trainers: the default iteration-based supervised schedule, and phases (BladeNet's alternating schedule)."""

from deblurstack import TrainerRecord, hookimpl


@hookimpl
def deblurstack_trainers():
    return [
        TrainerRecord(
            name="supervised",
            factory="deblurstack.engine.supervised:SupervisedTrainer",
            summary="Iteration-based supervised training: Adam(W), cosine/multistep, clipping, EMA, AMP, DDP",
            presets={
                # NAFNet / SAM-Deblur GoPro recipe (batch 32 in total: divide by the number of processes)
                "nafnet_gopro": {
                    "iterations": 200000,
                    "batch_size": 32,
                    "optimizer": "adamw",
                    "lr": 1e-3,
                    "betas": [0.9, 0.9],
                    "weight_decay": 1e-3,
                    "scheduler": "cosine",
                    "eta_min": 1e-7,
                    "grad_clip": 0.01,
                    "val_every": 10000,
                    "save_every": 10000,
                },
            },
        ),
        TrainerRecord(
            name="phased",
            factory="deblurstack.plugins.trainers.phased:PhasedTrainer",
            summary="Phases with their own split, trained parts, losses, optimizer and schedule, "
            "in sequence or alternating (BladeNet)",
            reference="Wang et al., LODE: Deep Local Deblurring and A New Benchmark, arXiv 2109.09149",
        ),
    ]
