"""Training end to end: run folder, hooks, checkpoints, resume after SIGKILL, failures, evaluation,
inference, distributed training with torchrun, and the quickstart."""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from deblurstack import hookimpl, resolve_config
from deblurstack.cli import main
from deblurstack.data import read_image, write_image
from deblurstack.engine.checkpoints import Checkpoints, load_training_state
from deblurstack.engine.prepare import EMBEDDED, embedded_photos, synthesize
from deblurstack.registry import get_plugin_manager
from tests.processes import deblurstack_process, install_killer, train_process, unequal_tensors

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Motion-blurred pairs made from two of scikit-image's photos, 64 px on the longer side."""
    root = tmp_path_factory.mktemp("pairs")
    blur = get_plugin_manager().get("synthesizer", "motion_blur").load_factory()(kernel_size=9, max_length=6.0)
    for split, names, seed in (("train", ["astronaut", "rocket"], 0), ("val", ["chelsea"], 1)):
        synthesize(EMBEDDED, root / split, blur, seed=seed, per_image=2, max_side=64, names=names)
    return root


def write_config(path: Path, pairs: Path, **train) -> Path:
    config = {
        "name": "tiny",
        "seed": 3,
        "stack": {"backbone": {"type": "unet.tiny"}, "losses": [{"type": "l1"}]},
        "data": {
            "train": {
                "type": "paired_folder",
                "input_dir": str(pairs / "train/input"),
                "target_dir": str(pairs / "train/target"),
                "patch_size": 32,
                "augment": True,
            },
            "val": {
                "type": "paired_folder",
                "input_dir": str(pairs / "val/input"),
                "target_dir": str(pairs / "val/target"),
            },
        },
        "metrics": [{"type": "psnr"}, {"type": "ssim"}],
        "train": {
            "type": "supervised",
            "iterations": 6,
            "batch_size": 2,
            "val_every": 3,
            "save_every": 3,
            "log_every": 2,
            "keep_last": 1,
            **train,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


class Recorder:
    def __init__(self):
        self.events = []

    @hookimpl
    def deblurstack_run_start(self, run):
        self.events.append(("start", run.step))

    @hookimpl
    def deblurstack_train_step_end(self, run, logs):
        self.events.append(("step", run.step, sorted(logs)))

    @hookimpl
    def deblurstack_validation_end(self, run, metrics, samples):
        self.events.append(("validation", run.step, sorted(metrics), len(samples)))

    @hookimpl
    def deblurstack_run_end(self, run, status):
        self.events.append(("end", run.step, status))


def test_training_writes_a_complete_run_folder_and_calls_the_hooks(tmp_path, pairs, register_plugin, capsys):
    recorder = Recorder()
    register_plugin(recorder, name="recorder")
    config = write_config(tmp_path / "tiny.yaml", pairs, ema_decay=0.9, grid_samples=2)
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "tiny"
    assert yaml.safe_load((run / "config.yaml").read_text()) == resolve_config(config).data
    environment = yaml.safe_load((run / "environment.yaml").read_text())
    assert environment["plugins"]["unet"].startswith("deblurstack ") and "train" in environment["command"]
    assert environment["deblurstack"].startswith("0.1.0")
    with open(run / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(r["step"], r["split"], r["metric"]) for r in rows] == [
        ("3", "val", "psnr"),
        ("3", "val", "ssim"),
        ("6", "val", "psnr"),
        ("6", "val", "ssim"),
    ]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pth", "step_00000006.pth"]
    state = load_training_state(run / "checkpoints" / "step_00000006.pth")
    assert state["step"] == 6 and state["ema_updates"] == 6 and state["best"]["metric"] == "psnr"
    assert any(not torch.equal(state["params"][k], state["params_ema"][k]) for k in state["params"])
    grid = read_image(run / "images" / "step_00000006.png")
    assert grid.shape[0] == 2 * 64 + 4 or grid.shape[0] > 64  # two sample rows
    log = (run / "train.log").read_text()
    assert "step 2: loss" in log and "validation at step 6: psnr" in log and "run completed at step 6" in log
    steps = [e for e in recorder.events if e[0] == "step"]
    assert [e[1] for e in steps] == [1, 2, 3, 4, 5, 6] and steps[0][2] == ["loss", "loss/l1", "lr"]
    assert recorder.events[0] == ("start", 0) and recorder.events[-1] == ("end", 6, "completed")
    assert [e for e in recorder.events if e[0] == "validation"] == [
        ("validation", 3, ["val/psnr", "val/ssim"], 2),
        ("validation", 6, ["val/psnr", "val/ssim"], 2),
    ]


def test_tensorboard_logging_writes_scalars_and_images(tmp_path, pairs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_config(tmp_path / "tiny.yaml", pairs, tensorboard=True, grid_samples=1)
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    events = EventAccumulator(str(tmp_path / "runs" / "tiny" / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "val/psnr", "val/ssim"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6]
    assert [e.step for e in events.Scalars("val/psnr")] == [3, 6]
    assert tags["images"] == ["val/chelsea_0"]


def test_a_run_with_a_stochastic_prior_killed_three_times_resumes_bit_identical(tmp_path, pairs, installed):
    """SIGKILL mid-way between checkpoints, between a validation and its checkpoint, and during a checkpoint
    write; each time resumed: every tensor of the final checkpoint (weights, EMA, optimizer, random states) and
    every metrics row equal those of an uninterrupted run, and no temporary file is left behind."""
    config = write_config(
        tmp_path / "map.yaml",
        pairs,
        iterations=30,
        save_every=10,
        val_every=10,
        keep_last=10,
        num_workers=2,
        ema_decay=0.9,
        deterministic=True,
        log_every=1000,
    )
    data = yaml.safe_load(config.read_text())
    data["stack"]["priors"] = [{"type": "sam_map.dropout"}]
    data["stack"]["backbone"] = {
        "type": "nafnet",
        "width": 8,
        "enc_blk_nums": [1],
        "middle_blk_num": 1,
        "dec_blk_nums": [1],
    }
    for split in ("train", "val"):
        data["data"][split]["aux"] = {"masks": {"type": "felzenszwalb", "scale": 20.0, "min_size": 20}}
    config.write_text(yaml.safe_dump(data))
    site = install_killer(installed)

    def train(folder: str, *extra: str, kill: str = "") -> subprocess.CompletedProcess:
        return train_process(config, tmp_path / folder, *extra, kill=kill, site=site)

    assert train("whole").returncode == 0
    run = tmp_path / "killed" / "tiny"
    for kill in ("step:13", "validation:20", "save:30"):
        died = train("killed", *(["--resume"] if (run / "checkpoints").exists() else []), kill=kill)
        assert died.returncode == -signal.SIGKILL, died.stderr
    assert list(run.glob("checkpoints/.*.tmp")), "the killed write left no temporary file to clean"
    resumed = train("killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(run.glob("checkpoints/.*.tmp"))
    whole = load_training_state(tmp_path / "whole" / "tiny" / "checkpoints" / "step_00000030.pth")
    final = load_training_state(run / "checkpoints" / "step_00000030.pth")
    different = unequal_tensors(whole, final)
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"
    assert (run / "metrics.csv").read_text() == (tmp_path / "whole" / "tiny" / "metrics.csv").read_text()


def test_channels_last_training_keeps_the_maths_and_resumes_exactly(tmp_path, pairs):
    """``channels_last: true`` trains in that layout (the saved weights are in it, also after a resume), to the
    default run's validation scores within rounding, and a run cut at its first checkpoint resumes to every tensor
    of the whole run."""
    runs = {name: tmp_path / name for name in ("default", "whole", "cut")}
    config = write_config(tmp_path / "tiny.yaml", pairs, ema_decay=0.9, keep_last=2, deterministic=True)
    layout = ["train.channels_last=true"]
    assert main(["train", str(config), "--runs-dir", str(runs["default"])]) == 0
    assert main(["train", str(config), *layout, "--runs-dir", str(runs["whole"])]) == 0
    shutil.copytree(runs["whole"], runs["cut"])
    (runs["cut"] / "tiny/checkpoints/step_00000006.pth").unlink()
    (runs["cut"] / "tiny/checkpoints/best.pth").unlink()
    assert main(["train", str(config), *layout, "--runs-dir", str(runs["cut"]), "--resume"]) == 0
    last = {name: load_training_state(run / "tiny/checkpoints/step_00000006.pth") for name, run in runs.items()}
    assert not unequal_tensors(last["whole"], last["cut"])
    for run in ("whole", "cut"):  # resumed too: equal values alone would not show the layout
        weights = last[run]["params"]
        # a kernel of one input channel or one tap has the same strides in both layouts
        kernels = [w for w in weights.values() if w.dim() == 4 and w.shape[1] > 1 and w[0, 0].numel() > 1]
        assert kernels
        assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in kernels)
    # the same training in another rounding; Adam turns a near-zero gradient's rounding into lr-sized steps
    scores = {name: (runs[name] / "tiny/metrics.csv").read_text().splitlines()[1:] for name in ("default", "whole")}
    assert [row.rsplit(",", 1)[0] for row in scores["default"]] == [row.rsplit(",", 1)[0] for row in scores["whole"]]
    for default, channels_last in zip(scores["default"], scores["whole"], strict=True):
        assert float(default.rsplit(",", 1)[1]) == pytest.approx(float(channels_last.rsplit(",", 1)[1]), abs=0.02)


@pytest.mark.usefixtures("test_components")
def test_a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, pairs, capsys):
    config = write_config(tmp_path / "tiny.yaml", pairs, iterations=20, save_every=2, val_every=0)
    code = main(
        ["train", str(config), "stack.losses.0={type: exploding_l1, after: 5}", "--runs-dir", str(tmp_path / "runs")]
    )
    assert code == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("deblurstack:")]
    last = tmp_path / "runs" / "tiny" / "checkpoints" / "step_00000004.pth"
    assert error == [
        f"deblurstack: error: step 6: the loss is not finite (exploding_l1 nan); training stopped, "
        f"last good checkpoint: {last}"
    ]
    assert load_training_state(last)["step"] == 4
    assert not (tmp_path / "runs" / "tiny" / "checkpoints" / "step_00000006.pth").exists()


def test_a_full_disk_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    checkpoints = Checkpoints(tmp_path / "checkpoints", keep_last=1)
    first = {"step": 1, "params": {"w": torch.ones(3)}}
    checkpoints.save(first, 1)
    before = (tmp_path / "checkpoints" / "step_00000001.pth").read_bytes()
    real_save = torch.save

    def disk_full(obj, file):
        real_save(obj, file)
        file.truncate(10)  # part of the data made it before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        checkpoints.save({"step": 2, "params": {"w": torch.zeros(3)}}, 2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000001.pth"]
    assert (tmp_path / "checkpoints" / "step_00000001.pth").read_bytes() == before


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pairs):
    folder = tmp_path_factory.mktemp("trained")
    config = write_config(folder / "tiny.yaml", pairs, ema_decay=0.5)
    data = yaml.safe_load(config.read_text())
    data["metrics"].append({"type": "mcr"})
    data["data"]["test"] = data["data"]["val"]
    config.write_text(yaml.safe_dump(data))
    assert main(["train", str(config), "--runs-dir", str(folder / "runs")]) == 0
    return config, folder / "runs" / "tiny" / "checkpoints" / "best.pth"


def test_evaluation_writes_per_image_scores_and_a_summary_with_the_protocol(tmp_path, trained, capsys):
    config, checkpoint = trained
    assert (
        main(["test", str(config), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "report"), "--save-images"])
        == 0
    )
    with open(tmp_path / "report" / "per_image.csv") as file:
        rows = list(csv.DictReader(file))
    assert [r["image"] for r in rows] == ["chelsea_0", "chelsea_1"]
    assert list(rows[0]) == ["image", "psnr", "ssim", "mcr", "input_psnr", "input_ssim", "input_mcr"]
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| | psnr ↑ | ssim ↑ | mcr ↓ |" in summary and "| blurry input |" in summary
    assert "PSNR on RGB, outputs clamped to [0,1] and rounded to uint8" in summary
    assert f"weights: {checkpoint} (params_ema, step" in summary and "whole images" in summary
    assert sorted(p.name for p in (tmp_path / "report" / "images").iterdir()) == ["chelsea_0.png", "chelsea_1.png"]
    assert capsys.readouterr().out.startswith("# tiny: test")


def test_evaluation_on_two_processes_writes_the_report_of_one_process(tmp_path, trained):
    config, checkpoint = trained
    reports = {}
    for processes in (1, 2):
        out = tmp_path / f"on_{processes}"
        ran = deblurstack_process(
            "test", str(config), "--checkpoint", str(checkpoint), "--out", str(out), processes=processes
        )
        assert ran.returncode == 0 and "terminate called" not in ran.stderr, ran.stderr
        # rank 0 alone prints the summary, and all of it arrives although torchrun's ranks leave with os._exit
        assert ran.stdout.count((out / "summary.md").read_text()) == 1, ran.stdout
        with open(out / "per_image.csv") as file:
            reports[processes] = list(csv.DictReader(file))
    assert [r["image"] for r in reports[2]] == ["chelsea_0", "chelsea_1"]  # one image on each rank, gathered in order
    for alone, ranked in zip(reports[1], reports[2], strict=True):
        assert {k: float(v) for k, v in alone.items() if k != "image"} == pytest.approx(
            {k: float(v) for k, v in ranked.items() if k != "image"}, rel=1e-6
        )


def test_evaluation_of_a_missing_split_or_weights_is_one_line(trained, capsys):
    config, checkpoint = trained
    assert main(["test", str(config), "--checkpoint", str(checkpoint), "--split", "gopro"]) == 2
    assert capsys.readouterr().err.strip().endswith("data.gopro: no such split (splits: test, train, val)")
    assert main(["test", str(config), "--checkpoint", str(checkpoint.with_name("nope.pth"))]) == 2
    assert "nope.pth: no such checkpoint file" in capsys.readouterr().err


def test_run_deblurs_files_folders_and_globs_keeping_16_bit(tmp_path, trained, pairs):
    config, checkpoint = trained
    inputs = tmp_path / "inputs"
    write_image(inputs / "eight.png", read_image(pairs / "val/input/chelsea_0.png"))
    write_image(inputs / "sixteen.png", read_image(pairs / "val/input/chelsea_1.png"), bit_depth=16)
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((40, 50), 90, np.uint8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert (
            main(
                [
                    "run",
                    str(config),
                    str(inputs),
                    str(tmp_path / "gr*.png"),
                    "--checkpoint",
                    str(checkpoint),
                    "--out",
                    str(tmp_path / "out"),
                ]
            )
            == 0
        )
    assert any("gray.png: grayscale, read as RGB" in str(w.message) for w in caught)
    written = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / "out").iterdir()}
    assert written["sixteen.png"].dtype == np.uint16 and written["eight.png"].dtype == np.uint8
    assert written["gray.png"].shape == (40, 50, 3)


def test_tiled_inference_matches_whole_image_inference(trained):
    from deblurstack import build_stack
    from deblurstack.checkpoint import load_stack_weights
    from deblurstack.engine.inference import predict

    config, checkpoint = trained
    stack = build_stack(config).eval()
    load_stack_weights(stack, checkpoint, "auto")
    from skimage import data

    photo = cv2.resize(data.coffee().astype(np.float32) / 255, (200, 150), interpolation=cv2.INTER_AREA)
    image = torch.from_numpy(photo.transpose(2, 0, 1).copy()).unsqueeze(0)
    with torch.inference_mode():
        whole, tiled = predict(stack, image), predict(stack, image, tile=64, overlap=24)
    psnr = 10 * torch.log10(1 / ((whole.clamp(0, 1) - tiled.clamp(0, 1)) ** 2).mean())
    assert psnr > 40, psnr


@pytest.mark.parametrize("channels_last", [False, True])
def test_distributed_training_on_two_processes_matches_one_process(tmp_path, pairs, channels_last):
    config = write_config(
        tmp_path / "tiny.yaml",
        pairs,
        iterations=8,
        val_every=4,
        save_every=8,
        log_every=1000,
        channels_last=channels_last,
    )
    norm = "stack.backbone.norm=none"  # batch norm statistics differ across per-process batches by design
    alone = train_process(config, tmp_path / "one", norm, "train.batch_size=4")
    assert alone.returncode == 0, alone.stderr
    ranks = train_process(config, tmp_path / "two", norm, "train.batch_size=2", processes=2)
    assert ranks.returncode == 0, ranks.stderr
    # DDP built before the layout changed would keep gradient buckets of the old strides (and warn every run)
    assert "bucket view strides" not in ranks.stderr
    one = load_training_state(tmp_path / "one" / "tiny" / "checkpoints" / "step_00000008.pth")
    two = load_training_state(tmp_path / "two" / "tiny" / "checkpoints" / "step_00000008.pth")
    for key, value in one["params"].items():
        assert torch.allclose(value, two["params"][key], rtol=1e-4, atol=1e-6), key
    with open(tmp_path / "two" / "tiny" / "metrics.csv") as file:
        assert [r["metric"] for r in csv.DictReader(file)] == ["psnr", "ssim", "psnr", "ssim"]


def test_the_quickstart_runs_end_to_end_at_toy_size(tmp_path, capsys):
    overrides = [
        "train.iterations=4",
        "train.val_every=2",
        "train.save_every=2",
        "vars.pairs_per_photo=1",
        "vars.max_side=64",
        "data.train.patch_size=32",
    ]
    assert main(["quickstart", "--data", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"), *overrides]) == 0
    out = capsys.readouterr().out
    assert "| blurry input |" in out and "| output |" in out
    assert (tmp_path / "runs" / "quickstart" / "evaluation" / "summary.md").is_file()
    assert (tmp_path / "runs" / "quickstart" / "images" / "step_00000004.png").is_file()
    train = {p.stem for p in (tmp_path / "data" / "train" / "input").iterdir()}
    assert len(train) == 15 + 12  # 17 photos, 2 held out, and 12 dead-leaves images
    # best.pth is picked on other pairs of the training photos, never on the held-out test photos
    val = {p.stem for p in (tmp_path / "data" / "val" / "input").iterdir()}
    assert val == {name for name in train if not name.startswith("dead_leaves_")} and len(val) == 15
    assert not {p.name.rsplit("_", 1)[0] for p in (tmp_path / "data" / "test" / "input").iterdir()} & {
        p.name.rsplit("_", 1)[0] for p in (tmp_path / "data" / "val" / "input").iterdir()
    }
    config = yaml.safe_load((tmp_path / "runs" / "quickstart" / "config.yaml").read_text())
    assert config["train"]["val_split"] == "val"


TOY_RECIPE = ["vars.pairs_per_photo=1", "vars.max_side=48"]


def test_quickstart_data_made_by_another_recipe_is_refused_not_reused(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["quickstart", "--data-only", "--data", str(data), *TOY_RECIPE]) == 0
    made = {p.name: p.stat().st_mtime_ns for p in (data / "train" / "input").iterdir()}
    assert main(["quickstart", "--data-only", "--data", str(data), *TOY_RECIPE]) == 0  # same recipe: reused
    assert {p.name: p.stat().st_mtime_ns for p in (data / "train" / "input").iterdir()} == made
    same = "vars.blur.noise_sigma=[0, 0.01]"  # the recipe's [0.0, 0.01] written otherwise: still the same recipe
    assert main(["quickstart", "--data-only", "--data", str(data), *TOY_RECIPE, same]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (data / "train" / "input").iterdir()} == made
    capsys.readouterr()
    # another blur would train on the old pairs without a word
    assert main(["quickstart", "--data-only", "--data", str(data), *TOY_RECIPE, "vars.blur={type: defocus}"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"{data / 'train'}: made by another quickstart recipe" in error and "--data" in error
    assert {p.name: p.stat().st_mtime_ns for p in (data / "train" / "input").iterdir()} == made  # nothing lost
    # a folder the quickstart did not finish (or an older version made) is not taken as this recipe's either
    (data / "val" / "recipe.json").unlink()
    assert main(["quickstart", "--data-only", "--data", str(data), *TOY_RECIPE]) == 2
    assert f"{data / 'val'}: made by another quickstart recipe" in capsys.readouterr().err


def test_quickstart_dead_leaves_images_are_trained_on_but_not_validated_on(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["quickstart", "--data-only", "--data", str(data), *TOY_RECIPE, "vars.dead_leaves=2"]) == 0
    assert "train also: 2 dead-leaves images" in capsys.readouterr().out
    train, val = ({p.stem for p in (data / split / "input").iterdir()} for split in ("train", "val"))
    assert train - val == {"dead_leaves_0", "dead_leaves_1"} and len(val) == 15
    target = read_image(data / "train" / "target" / "dead_leaves_1.png")
    assert np.abs(target - embedded_photos(48, ["dead_leaves_1"])["dead_leaves_1"]).max() <= 0.5 / 255
    stamp = json.loads((data / "train" / "recipe.json").read_text())
    assert stamp["dead_leaves"] == {"version": 1, "size": 512, "discs": 10000}  # another drawing: another recipe
    assert "dead_leaves" not in json.loads((data / "val" / "recipe.json").read_text())
    # another count is another recipe: its pairs are not taken for these
    assert main(["quickstart", "--data-only", "--data", str(data), *TOY_RECIPE, "vars.dead_leaves=3"]) == 2
    assert f"{data / 'train'}: made by another quickstart recipe" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "key", "problem"),
    [
        ("vars.seeds={train: 0, test: 1}", "vars.seeds.val", "field required"),
        ("vars.dead_leaves=-1", "vars.dead_leaves", "greater than or equal to 0"),
        # the dead-leaves images come from vars.dead_leaves, never from the photo lists: none is trained and tested on
        ("vars.test_photos=[dead_leaves_0]", "vars.test_photos.0", "(got 'dead_leaves_0')"),
        ("vars.photos=[chelsea, coffee, dead_leaves_1]", "vars.photos.2", "(got 'dead_leaves_1')"),
        ("vars.pairs_per_photo=0", "vars.pairs_per_photo", "greater than or equal to 1"),
        ("vars.max_side=abc", "vars.max_side", "valid integer"),
        ("vars.test_photos=[]", "vars.test_photos", "at least 1 item"),
        ("vars.test_photos=[chelsea, kitten]", "vars.test_photos.1", "kitten"),
        ("vars.photos=[astronaut, brick]", "vars.test_photos.0", "'chelsea' is not one of vars.photos"),
        ("vars.photos=[coffee, chelsea]", "vars.photos", "nothing is left to train on"),
        ("vars.photos=[rocket, coffee, chelsea, rocket]", "vars.photos", "named more than once: rocket"),
        ("vars.seeds.val=-1", "vars.seeds.val", "greater than or equal to 0"),
        ("vars.pairs_per_phot=3", "vars.pairs_per_phot", "extra inputs are not permitted"),
    ],
)
def test_a_bad_quickstart_recipe_is_one_line_naming_its_key(tmp_path, capsys, override, key, problem):
    assert main(["quickstart", "--data-only", "--data", str(tmp_path / "data"), override]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"quickstart.yaml: {key}: " in error and problem in error.lower()
    assert not (tmp_path / "data").exists()


@pytest.mark.usefixtures("test_components")
def test_an_ablation_trains_and_scores_every_variant_into_one_table(tmp_path, pairs, capsys):
    config = write_config(tmp_path / "tiny.yaml", pairs, iterations=2, val_every=0, save_every=0)
    data = yaml.safe_load(config.read_text())
    data["data"]["test"] = data["data"]["val"]
    data["variants"] = {"plain": {}, "luma": {"stack.priors": [{"type": "luma"}]}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))  # the table follows the file's order
    assert main(["ablation", str(config), "--runs-dir", str(tmp_path / "runs"), "--no-report"]) == 0
    table = (tmp_path / "runs" / "tiny-ablation" / "table.md").read_text()
    lines = table.splitlines()
    assert lines[2] == "| variant | psnr ↑ | ssim ↑ |"
    assert [line.split(" | ")[0] for line in lines[4:7]] == ["| blurry input", "| plain", "| luma"]
    assert lines[7] == ""  # the seeds and the protocols follow the table
    assert (tmp_path / "runs" / "tiny-luma-s3" / "config.yaml").is_file()  # <name>-<variant>-s<seed>
    luma = yaml.safe_load((tmp_path / "runs" / "tiny-luma-s3" / "config.yaml").read_text())
    assert luma["stack"]["priors"] == [{"type": "luma"}] and luma["stack"]["backbone"]["in_channels"] == 4
    assert "ablation table:" in capsys.readouterr().out


def test_evaluation_without_weights_is_an_error_and_config_weights_are_used(tmp_path, trained, capsys):
    config, checkpoint = trained
    assert main(["test", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "no weights: pass --checkpoint, or set stack.checkpoint in the config" in capsys.readouterr().err
    state = load_training_state(checkpoint)
    torch.save({"params": state["params"]}, tmp_path / "weights.pth")
    overrides = [f"stack.checkpoint={tmp_path / 'weights.pth'}"]
    assert main(["test", str(config), *overrides, "--out", str(tmp_path / "r")]) == 0
    assert f"weights: stack.checkpoint {tmp_path / 'weights.pth'}" in (tmp_path / "r" / "summary.md").read_text()


def test_the_trainer_example_of_the_hook_specs_trains_and_resumes_exactly(tmp_path, pairs, installed):
    """The example of ``deblurstack_trainers``, installed as a third-party package: a trainer built on
    TrainingLoop gets checkpoints, validation, metrics and an exact resume without a loop of its own, and under
    torchrun two ranks of half the batch train what one process does."""
    from deblurstack import hookspecs

    example = hookspecs.deblurstack_trainers.__doc__.split("Example::\n")[1]
    site = installed("deblurstack-plain", {"plain_trainer": textwrap.dedent(example)}, {"plain": "plain_trainer"})
    config = write_config(tmp_path / "plain.yaml", pairs, keep_last=5)
    data = yaml.safe_load(config.read_text())
    data["train"] = {"type": "plain", "iterations": 4, "save_every": 2, "keep_last": 5, "batch_size": 2}
    data["stack"]["backbone"]["norm"] = "none"  # batch norm statistics differ across per-process batches
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "deblurstack", "train", str(config)]
    subprocess.run([*command, "--runs-dir", str(tmp_path / "whole")], check=True, capture_output=True, env=env)
    whole = tmp_path / "whole" / "tiny"
    assert sorted(p.name for p in (whole / "checkpoints").iterdir()) == [
        "best.pth",
        "step_00000002.pth",
        "step_00000004.pth",
    ]
    with open(whole / "metrics.csv") as file:
        assert [(r["step"], r["metric"]) for r in csv.DictReader(file)] == [("4", "psnr"), ("4", "ssim")]
    shutil.copytree(whole, tmp_path / "cut" / "tiny")
    for name in ("step_00000004.pth", "best.pth"):
        (tmp_path / "cut" / "tiny" / "checkpoints" / name).unlink()
    subprocess.run(
        [*command, "--runs-dir", str(tmp_path / "cut"), "--resume"], check=True, capture_output=True, env=env
    )
    first = load_training_state(whole / "checkpoints" / "step_00000004.pth")
    again = load_training_state(tmp_path / "cut" / "tiny" / "checkpoints" / "step_00000004.pth")
    assert not unequal_tensors(first, again)
    ranks = train_process(config, tmp_path / "ranks", "train.batch_size=1", processes=2, site=site)
    assert ranks.returncode == 0, ranks.stderr
    two = load_training_state(tmp_path / "ranks" / "tiny" / "checkpoints" / "step_00000004.pth")
    for key, value in first["params"].items():
        assert torch.allclose(value, two["params"][key], rtol=1e-4, atol=1e-6), key


def _bad_images(folder: Path) -> dict[str, bytes]:
    """A zero-byte PNG and one whose header claims 200000 x 200000 pixels."""
    from tests.test_data import huge_png_header

    return {"empty.png": b"", "huge.png": huge_png_header()}


def test_test_skip_bad_scores_each_good_image_once_and_lists_the_skipped(tmp_path, trained, pairs, capsys):
    config, checkpoint = trained
    folder = tmp_path / "val"
    shutil.copytree(pairs / "val", folder)
    for name, content in _bad_images(folder).items():
        (folder / "input" / name).write_bytes(content)
        shutil.copy(folder / "target" / "chelsea_0.png", folder / "target" / name)
    data = [f"data.test.input_dir={folder / 'input'}", f"data.test.target_dir={folder / 'target'}"]
    out = tmp_path / "report"
    assert main(["test", str(config), *data, "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "empty.png: not a readable image (the file is empty)" in capsys.readouterr().err
    assert main(["test", str(config), *data, "--checkpoint", str(checkpoint), "--out", str(out), "--skip-bad"]) == 0
    with open(out / "per_image.csv") as file:
        assert [row["image"] for row in csv.DictReader(file)] == ["chelsea_0", "chelsea_1"]
    summary = (out / "summary.md").read_text()
    assert "2 images; 2 skipped (below)." in summary
    assert "empty.png: not a readable image (the file is empty)" in summary
    assert "huge.png: not a readable image: too large to decode" in summary


def test_run_names_a_bad_file_in_one_line_and_skip_bad_deblurs_the_rest(tmp_path, trained, pairs, capsys):
    config, checkpoint = trained
    inputs = tmp_path / "inputs"
    shutil.copytree(pairs / "val" / "input", inputs)
    for name, content in _bad_images(inputs).items():
        (inputs / name).write_bytes(content)
    command = ["run", str(config), str(inputs), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]
    assert main(command) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"deblurstack: error: {inputs / 'empty.png'}: not a readable image (the file is empty)"]
    assert main([*command, "--skip-bad", "--overwrite"]) == 0  # the first run wrote the images before empty.png
    printed = capsys.readouterr().out
    assert "2 image(s) written to" in printed and "2 skipped" in printed and "huge.png" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["chelsea_0.png", "chelsea_1.png"]


def test_reports_of_one_checkpoint_never_overwrite_each_other(tmp_path, trained, capsys):
    config, checkpoint = trained
    for _ in range(2):
        assert main(["test", str(config), "--checkpoint", str(checkpoint), "--split", "val"]) == 0
    evaluation = checkpoint.parent.parent / "evaluation"
    assert {"val", "val_1"} <= {p.name for p in evaluation.iterdir()}
    assert main(["test", str(config), "--checkpoint", str(checkpoint), "--out", str(evaluation / "val")]) == 2
    assert "already holds a report" in capsys.readouterr().err


def test_a_resumed_run_reads_its_checkpoint_once(tmp_path, pairs, monkeypatch):
    config = write_config(tmp_path / "tiny.yaml", pairs, iterations=4, save_every=2, val_every=0, keep_last=2)
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert main(["train", str(config), *runs]) == 0
    checkpoints = tmp_path / "runs" / "tiny" / "checkpoints"
    (checkpoints / "step_00000004.pth").unlink()  # a run cut after its first checkpoint
    reads, load = [], torch.load

    def counted(path, *args, **kwargs):  # the real torch.load, counted (a checkpoint may be gigabytes)
        reads.append(Path(path).name)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    assert main(["train", str(config), *runs, "--resume"]) == 0
    assert reads.count("step_00000002.pth") == 1
    assert load_training_state(checkpoints / "step_00000004.pth")["step"] == 4


def test_resuming_with_a_checkpoint_of_another_architecture_is_one_line(tmp_path, pairs, capsys):
    config = write_config(tmp_path / "tiny.yaml", pairs, iterations=2, save_every=2)
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert main(["train", str(config), *runs]) == 0
    capsys.readouterr()
    assert main(["train", str(config), "stack.backbone.width=4", *runs, "--resume"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1, errors
    assert "step_00000002.pth [params] does not fit Stack: shape mismatch: backbone." in errors[0]


def test_a_pickled_checkpoint_is_refused_with_how_to_convert_a_trusted_file(tmp_path, trained, capsys):
    config, _ = trained
    pickled = tmp_path / "pickled.pth"
    torch.save({"params": {}, "options": argparse.Namespace(lr=1)}, pickled)
    assert main(["test", str(config), "--checkpoint", str(pickled)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "deblurstack only reads weights and never runs code from a checkpoint" in error
    assert "weights_only=False" not in error.split("trust")[0]  # torch's advice to turn the safety off is gone


def test_scoring_needs_only_the_data_of_the_split_it_reads(tmp_path, trained, capsys):
    config, checkpoint = trained
    gone = [f"data.train.input_dir={tmp_path / 'gone'}", f"data.train.target_dir={tmp_path / 'gone'}"]
    assert main(["config", "check", str(config), *gone]) == 2
    assert f"data.train.input_dir: no such folder: {tmp_path / 'gone'}" in capsys.readouterr().err
    out = tmp_path / "report"
    assert main(["test", str(config), *gone, "--checkpoint", str(checkpoint), "--split", "val", "--out", str(out)]) == 0
    assert (out / "summary.md").is_file()
