"""examples/sam_deblur: the paper's GoPro ablation, the four release files, and the CPU-sized ablation run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deblurstack import build_stack, resolve_config, save_atomic
from deblurstack.cli import main
from deblurstack.compose import resolve_node
from deblurstack.data import read_image
from deblurstack.engine.prepare import EMBEDDED, synthesize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "sam_deblur"
OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
VARIANTS = ["wo_sam", "cat", "map", "map_dropout"]  # the four GoPro models of the official README
PRIORS = {"wo_sam": [], "cat": ["sam_cat"], "map": ["sam_map"], "map_dropout": ["sam_map"]}
IN_CHANNELS = {"wo_sam": 3, "cat": 4, "map": 5, "map_dropout": 5}
DROPOUT = {"map": 0.0, "map_dropout": 0.5}


def check_variant(resolved, variant: str) -> None:
    """The variant's priors, backbone input channels, mask dropout, and masks only where a prior reads them."""
    assert [prior.type.split(".")[0] for prior in resolved.priors] == PRIORS[variant]
    assert resolved.backbone.params["in_channels"] == IN_CHANNELS[variant]
    if variant in DROPOUT:
        assert resolved.priors[0].params["dropout"] == DROPOUT[variant]
        assert resolved.priors[0].params["seg_channels"] == 2
    for dataset in resolved.datasets.values():
        assert ("masks" in dataset.aux) == (variant != "wo_sam")


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_gopro_ablation_configures_every_variant_with_the_official_recipe(tmp_path, variant):
    # the GoPro_Large folder must exist when the config is checked (its split folders only when it is read)
    resolved = resolve_config(EXAMPLES / "gopro.yaml", [f"vars.gopro={tmp_path}"], variant=variant)
    check_variant(resolved, variant)
    if variant in DROPOUT:  # masks of value 1, a documented difference from the official code's 1/255
        assert resolved.priors[0].params["release_compat"] is False
    assert resolved.data["name"] == f"sam_deblur_gopro-{variant}"
    backbone = resolved.backbone
    assert backbone.params["width"] == 32 and list(backbone.params["enc_blk_nums"]) == [1, 1, 1, 28]
    assert backbone.options["tlc"]["train_size"] == [256, 256]
    assert [loss.type for loss in resolved.losses] == ["psnr"]
    train = resolved.trainer.params
    recipe = {"iterations": 200000, "batch_size": 32, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-3}
    assert {key: train[key] for key in recipe} == recipe
    assert list(train["betas"]) == [0.9, 0.9] and train["scheduler"] == "cosine" and train["eta_min"] == 1e-7
    assert train["grad_clip"] == 0.01
    assert resolved.datasets["train"].params["patch_size"] == 256 and resolved.datasets["train"].params["augment"]
    if variant != "wo_sam":  # SAM ViT-H with the generator's defaults on BGR input, as the official script
        masks = resolved.datasets["train"].aux["masks"].to_dict()
        assert masks["model_type"] == "vit_h" and masks["channel_order"] == "bgr" and masks["points_per_side"] == 32
    ssim = next(metric for metric in resolved.metrics if metric.type == "ssim")
    assert [metric.type for metric in resolved.metrics] == ["psnr", "ssim", "mcr"]
    assert ssim.params["variant"] == "gaussian3d"


RELEASE_FILES = {
    "wo_sam": ("NAFNet-GoPro.pth", "nafnet_w32_keys.json"),
    "cat": ("MaskNAFNet-GoPro.pth", "sam_deblur_masknafnet_keys.json"),
    "map": ("SegNAFNet-no-dropout-GoPro.pth", "sam_deblur_segnafnet_keys.json"),
    "map_dropout": ("SegNAFNet-GoPro.pth", "sam_deblur_segnafnet_keys.json"),
}


@pytest.fixture(scope="module")
def release_folder(tmp_path_factory):
    """The four release files, random tensors under the official key names and shapes ({"params": ...})."""
    folder = tmp_path_factory.mktemp("release")
    for seed, (name, keys) in enumerate(RELEASE_FILES.values()):
        generator = torch.Generator().manual_seed(seed)
        shapes = json.loads((OFFICIAL / keys).read_text())
        save_atomic({"params": {k: torch.randn(s, generator=generator) for k, s in shapes.items()}}, folder / name)
    return folder


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_release_variant_loads_its_official_file_into_the_stack_it_describes(tmp_path, release_folder, variant):
    for folder in ("input", "target", "grouped_masks", "input_predict_mask"):  # SAM-Deblur's prepared test folder
        (tmp_path / folder).mkdir()
    overrides = [f"vars.release={release_folder}", f"vars.gopro={tmp_path}"]
    resolved = resolve_config(EXAMPLES / "release.yaml", overrides, variant=variant)
    check_variant(resolved, variant)
    if variant in DROPOUT:
        assert resolved.priors[0].params["release_compat"]  # the released files saw masks of value 1/255
    masks = resolved.datasets["test"].aux.get("masks")
    assert (masks and masks.params["format"]) == {"wo_sam": None, "cat": "png"}.get(variant, "npz")
    name, _ = RELEASE_FILES[variant]
    stack = resolved.build_stack()  # strict: every official key has its place, and every parameter a key
    official = torch.load(release_folder / name, weights_only=True)["params"]
    ours = {
        key.split(".", 1)[1] if key.startswith("backbone.") else key.split(".", 2)[2]: value
        for key, value in stack.state_dict().items()
        if not key.endswith("_tlc_size")
    }
    assert ours.keys() == official.keys()
    assert all(torch.equal(ours[key], official[key]) for key in official)


def synthetic_pairs(folder: Path, names: list[str], seed: int, per_image: int = 1) -> None:
    """Small camera-shake pairs (48 px on the long side) of the bundled photos ``names`` in folder/{input,target}."""
    blur = resolve_node("synthesizer", {"type": "motion_blur", "kernel_size": 9, "max_length": 6.0}, "blur").build()
    synthesize(EMBEDDED, folder, blur, seed=seed, per_image=per_image, max_side=48, names=names)


def test_the_small_ablation_trains_and_scores_every_variant_on_the_bundled_photos(tmp_path, capsys):
    """small.yaml end to end at a smaller size: Felzenszwalb masks cached, four variants, one table."""
    data = tmp_path / "data"
    synthetic_pairs(data / "train", ["astronaut", "rocket"], seed=0)
    synthetic_pairs(data / "test", ["coffee"], seed=1)
    overrides = [
        f"vars.data={data}",
        f"vars.masks.cache={tmp_path / 'masks'}",
        "vars.masks.min_size=20",
        "stack.backbone.width=8",
        "data.train.patch_size=32",
        "train.iterations=2",
        "train.batch_size=2",
        "train.val_every=0",
        "train.save_every=0",
    ]
    runs = str(tmp_path / "runs")
    assert main(["ablation", str(EXAMPLES / "small.yaml"), "--runs-dir", runs, "--no-report", *overrides]) == 0
    lines = (tmp_path / "runs" / "sam_deblur_small-ablation" / "table.md").read_text().splitlines()
    assert lines[2] == "| variant | psnr ↑ | ssim ↑ | mcr ↓ |"
    rows = [line.split(" | ")[0] for line in lines[4 : 5 + len(VARIANTS)]]
    assert rows == ["| blurry input", *(f"| {v}" for v in VARIANTS)]
    assert len(list((tmp_path / "masks").rglob("*.png"))) == 3  # one map per image, shared by the variants
    config = yaml.safe_load((tmp_path / "runs" / "sam_deblur_small-map_dropout-s0" / "config.yaml").read_text())
    assert config["stack"]["priors"][0]["dropout"] == 0.5


def test_run_computes_the_priors_masks_with_the_mask_source_of_the_test_split(tmp_path, capsys):
    """``deblurstack run`` on a MAP stack: masks from data.test.aux, outputs equal to ``test --save-images``."""
    synthetic_pairs(tmp_path / "data" / "test", ["coffee"], seed=1, per_image=2)
    for folder in ("input", "target"):  # build_stack checks every split of the config, data.train included
        (tmp_path / "data" / "train" / folder).mkdir(parents=True)
    overrides = [f"vars.data={tmp_path / 'data'}", f"vars.masks.cache={tmp_path / 'masks'}", "stack.backbone.width=8"]
    config = str(EXAMPLES / "small.yaml")
    torch.manual_seed(0)
    save_atomic({"params": build_stack(config, overrides).state_dict()}, tmp_path / "w.pth")
    weights = ["--checkpoint", str(tmp_path / "w.pth")]
    report = tmp_path / "report"
    assert main(["test", config, *overrides, *weights, "--out", str(report), "--save-images"]) == 0
    inputs = str(tmp_path / "data" / "test" / "input")
    assert main(["run", config, inputs, *overrides, "--out", str(tmp_path / "out"), *weights]) == 0
    names = sorted(path.name for path in (report / "images").iterdir())
    assert names == ["coffee_0.png", "coffee_1.png"]
    for name in names:
        assert np.array_equal(read_image(tmp_path / "out" / name), read_image(report / "images" / name))
    capsys.readouterr()

    assert main(["run", config, inputs, "--out", str(tmp_path / "x"), *weights, *overrides, "--aux-from", "val"]) == 2
    message = "data.val: no such split to take the priors' inputs from (--aux-from; splits: train, test)"
    assert message in capsys.readouterr().err


def test_the_generalisation_study_plans_every_trial_and_never_validates_on_a_test_split(tmp_path, capsys):
    """study.yaml: 4 variants x 3 seeds planned (every trial's config checked), scored on four test splits of the
    held-out photos, best.pth picked on a split of the training photos only."""
    data = tmp_path / "data"
    synthetic_pairs(data / "train", ["astronaut"], seed=0)
    synthetic_pairs(data / "test", ["coffee"], seed=1)
    config = EXAMPLES / "study.yaml"
    overrides = [f"vars.data={data}", f"vars.masks.cache={tmp_path / 'masks'}"]
    runs = tmp_path / "runs"
    assert main(["ablation", str(config), "--plan", "--runs-dir", str(runs), *overrides]) == 0
    capsys.readouterr()
    jobs = sorted((runs / "sam_deblur_study-ablation" / "jobs").glob("*.yaml"))
    assert [job.stem for job in jobs] == sorted(f"sam_deblur_study-{v}-s{s}" for v in VARIANTS for s in range(3))
    study = yaml.safe_load(config.read_text())
    splits = study["ablation"]["splits"]
    assert study["train"]["val_split"] not in splits and len(splits) == 4
    held_out = set(study["vars"]["held_out"])
    assert held_out.isdisjoint(study["vars"]["training_photos"])
    for split in splits[1:]:  # the synthesized out-of-distribution sets: the held-out photos only
        assert study["data"][split]["photos"] == "${vars.held_out}"
    wo_sam = yaml.safe_load(
        (runs / "sam_deblur_study-ablation" / "jobs" / "sam_deblur_study-wo_sam-s0.yaml").read_text()
    )
    assert wo_sam["stack"]["priors"] == [] and all(not wo_sam["data"][s].get("aux") for s in wo_sam["data"])


def test_with_the_trainer_broken_the_priors_inputs_are_still_checked_on_every_split(tmp_path, capsys):
    data = tmp_path / "data"
    synthetic_pairs(data / "train", ["astronaut"], seed=0)
    synthetic_pairs(data / "test", ["coffee"], seed=1)
    overrides = [f"vars.data={data}", f"vars.masks.cache={tmp_path / 'masks'}", "train.lr=-1", "data.test.aux={}"]
    capsys.readouterr()
    assert main(["config", "check", str(EXAMPLES / "small.yaml"), *overrides]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert "small.yaml: train.lr: " in lines[0]
    assert "small.yaml: data.test: prior 'sam_map.dropout' (stack.priors[0]) needs input 'masks'" in lines[1]
