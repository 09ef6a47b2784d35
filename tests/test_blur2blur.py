"""Blur2Blur: the translator (official generator files, conformance), the unpaired data (disjoint, deterministic,
paired by name), known-blur generation, and the adversarial trainer (the deblurrer untouched, the discriminator
checkpointed, exact resume after SIGKILL, torchrun, config errors)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deblurstack import ImageError, build_stack
from deblurstack.checkpoint import save_atomic
from deblurstack.cli import main
from deblurstack.data import write_image
from deblurstack.engine.checkpoints import load_training_state, seed_global_generators
from deblurstack.plugins.blur2blur.kernel_wizard import KernelWizard
from deblurstack.plugins.blur2blur.known_blur import KnownImages, Synthesizer
from deblurstack.plugins.blur2blur.unpaired import UnpairedFolder
from deblurstack.testing import check_component
from tests.official_weights import official_weights
from tests.processes import install_killer, train_process, unequal_tensors

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
TRAIN_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field"]


def deblurrer(folder: Path) -> Path:
    """A random tiny U-Net's weights, as the frozen deblurrer's checkpoint."""
    path = folder / "deblurrer.pth"
    if not path.exists():
        seed_global_generators(0)
        save_atomic(build_stack({"stack": {"backbone": {"type": "unet.tiny"}}}).backbone.state_dict(), path)
    return path


def b2b_config(folder: Path, **train) -> dict:
    return {
        "name": "b2b",
        "seed": 0,
        "stack": {
            "translator": {"type": "blur2blur", "generator": "unet.tiny"},
            "backbone": {"type": "unet.tiny", "frozen": True, "checkpoint": str(deblurrer(folder))},
        },
        "data": {
            "train": {
                "type": "unpaired",
                "unknown": {
                    "type": "synthesized",
                    "sharp_dir": "skimage",
                    "photos": TRAIN_PHOTOS,
                    "synthesizer": {"type": "defocus"},
                    "max_side": 160,
                },
                "patch_size": 128,
            },
            "val": {
                "type": "synthesized",
                "sharp_dir": "skimage",
                "photos": ["camera", "brick"],
                "synthesizer": {"type": "defocus"},
                "max_side": 64,
                "seed": 5,
            },
        },
        "metrics": [{"type": "psnr"}],
        "train": {
            "type": "adversarial",
            "iterations": 4,
            "batch_size": 2,
            "discriminator": {"type": "patchgan", "ndf": 8},
            "reconstruction": [{"type": "l1", "weight": 0.8}],
            "known_blur": {"type": "synthesizer", "synthesizer": {"type": "motion_blur", "max_length": 8.0}},
            "val_every": 2,
            "save_every": 2,
            "log_every": 1,
            "grid_samples": 1,
            **train,
        },
    }


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


# ---------------------------------------------------------------------- translator and discriminator


def test_the_translator_and_the_discriminator_conform_to_their_kinds():
    check_component("translator", "blur2blur")  # the official MIMO-UNet generator
    check_component("translator", "blur2blur", {"generator": "nafnet_baseline.w32"})  # a one-output generator
    check_component("discriminator", "patchgan", {"ndf": 8})


def test_an_official_generator_file_loads_with_or_without_module_prefix_and_gives_mimo_unets_outputs(tmp_path):
    keys = json.loads((OFFICIAL / "mimo_unet_keys.json").read_text())
    weights = official_weights(keys)  # latest_net_G.pth holds MIMO-UNet's own keys
    save_atomic(weights, tmp_path / "plain.pth")
    save_atomic({f"module.{k}": v for k, v in weights.items()}, tmp_path / "ddp.pth")
    mimo = build_stack({"stack": {"backbone": {"type": "mimo_unet.base", "checkpoint": str(tmp_path / "plain.pth")}}})
    image = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = mimo.backbone.eval()(image)
        for file in ("plain.pth", "ddp.pth"):
            stack = build_stack(
                {
                    "stack": {
                        "translator": {"type": "blur2blur", "checkpoint": str(tmp_path / file)},
                        "backbone": {"type": "unet.tiny"},
                    }
                }
            )
            scales = stack.translator.eval()(image)
            assert [s.shape for s in scales] == [e.shape for e in expected]
            assert all(torch.equal(s, e) for s, e in zip(scales, expected, strict=True))


def test_a_one_output_generator_gets_bilinear_coarser_scales():
    stack = build_stack(
        {"stack": {"translator": {"type": "blur2blur", "generator": "unet.tiny"}, "backbone": {"type": "unet.tiny"}}}
    )
    image = torch.rand(2, 3, 64, 48)
    scales = stack.translator(image)
    assert [tuple(s.shape[-2:]) for s in scales] == [(16, 12), (32, 24), (64, 48)]
    expected = torch.nn.functional.interpolate(scales[-1], scale_factor=0.25, mode="bilinear")
    assert torch.equal(scales[0], expected)


# ---------------------------------------------------------------------- unpaired data


def _layout(root: Path, names: list[str], known: list[str]) -> Path:
    """trainA/trainB with the same scene names (a paired set), and known pairs whose two files are equal."""
    rng = np.random.default_rng(0)
    for name in names:
        for folder in ("trainA", "trainB"):
            write_image(root / folder / f"{name}.png", rng.random((40, 48, 3), dtype=np.float32))
    for name in known:
        image = rng.random((36, 44, 3), dtype=np.float32)
        for folder in ("trainC", "trainD"):
            write_image(root / folder / f"{name}.png", image)
    return root


def test_the_official_layout_splits_a_and_b_disjointly_and_pairs_known_images_by_name(tmp_path):
    names = [f"scene{i:02d}" for i in range(10)]
    root = _layout(tmp_path / "rb2v", names, ["k0", "k1", "k2"])
    dataset = UnpairedFolder(str(root), patch_size=32, load_size=None)
    blurry = {dataset.blurry_names[i] for i in dataset.blurry_positions}
    sharp = {dataset.sharp_names[i] for i in dataset.sharp_positions}
    assert blurry == set(names[:6]) and sharp == set(names[6:])  # the official 0.6: first 6 blurry, last 4 sharp
    assert len(dataset) == 6
    first, again = dataset[(3, 0, 1)], dataset[(3, 0, 1)]
    assert all(torch.equal(first[k], again[k]) for k in ("input", "sharp", "known_blur", "known_sharp"))
    other = dataset[(3, 0, 2)]  # another epoch: other crops
    assert not torch.equal(first["input"], other["input"])
    assert first["input"].shape == first["sharp"].shape == first["known_blur"].shape == (3, 32, 32)
    assert torch.equal(first["known_blur"], first["known_sharp"])  # one crop of both (the files are equal)
    assert first["name"] == "scene03"


def test_bad_unpaired_folders_are_one_line_and_shared_scenes_are_counted(tmp_path):
    names = [f"scene{i}" for i in range(4)]
    root = _layout(tmp_path / "set", names, [])
    with pytest.warns(UserWarning, match="4 image name"):
        UnpairedFolder(str(root), split=None, patch_size=32, load_size=None)
    (tmp_path / "empty" / "trainA").mkdir(parents=True)
    (tmp_path / "empty" / "trainB").mkdir()
    with pytest.raises(ImageError, match=r"empty/trainA: no images"):
        UnpairedFolder(str(tmp_path / "empty"))
    (root / "trainC").mkdir()
    (root / "trainD").mkdir()
    (root / "trainC" / "k0.png").write_bytes((root / "trainA" / "scene0.png").read_bytes())
    (root / "trainD" / "extra.png").write_bytes((root / "trainA" / "scene0.png").read_bytes())
    with pytest.raises(ImageError, match="has no match"):
        UnpairedFolder(str(root), patch_size=32)


# ---------------------------------------------------------------------- known-blur generation


def test_synthesized_known_blur_depends_only_on_its_entropy_and_known_images_pass_through():
    generator = Synthesizer(type="synthesizer", synthesizer={"type": "motion_blur", "max_length": 8.0}).build()
    batch = {"sharp": torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
    first, again, other = (
        generator(batch, (0, 5), [0, 1]),
        generator(batch, (0, 5), [0, 1]),
        generator(batch, (0, 6), [0, 1]),
    )
    assert first.shape == (2, 3, 32, 32) and torch.equal(first, again) and not torch.equal(first, other)
    alone = generator({"sharp": batch["sharp"][1:]}, (0, 5), [1])  # sample 1 alone, as another process makes it
    assert torch.equal(alone[0], first[1]) and first[0].std() > 0.01
    known = torch.rand(2, 3, 8, 8)
    assert KnownImages()({"known_blur": known}, (0,), [0, 1]) is known


# ---------------------------------------------------------------------- the adversarial trainer


def test_adversarial_training_leaves_the_deblurrer_bit_identical_and_checkpoints_the_discriminator(tmp_path):
    config = write(tmp_path / "b2b.yaml", b2b_config(tmp_path))
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "b2b"
    final = load_training_state(run / "checkpoints" / "step_00000004.pth")
    frozen = torch.load(deblurrer(tmp_path), weights_only=True)
    assert all(torch.equal(final["params"][f"backbone.{k}"], v) for k, v in frozen.items())
    initial = build_stack(str(config)).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in final["params"].items() if k.startswith("translator."))
    assert {"discriminator", "optimizer.generator", "optimizer.discriminator"} <= set(final)
    assert any(k.startswith("model.") for k in final["discriminator"])  # official NLayerDiscriminator names
    log = (run / "train.log").read_text()
    assert "loss/gan" in log and "loss/reconstruction/l1" in log and "loss_d/gp" in log
    from deblurstack.data import read_image

    grid = read_image(run / "images" / "step_00000004.png")
    assert grid.shape[1] == 4 * 64 + 3 * 4  # input | translated | deblurred | target


@pytest.mark.usefixtures("test_components")
def test_a_translator_returning_one_image_trains_against_a_one_scale_discriminator(tmp_path):
    """The translator contract allows one image instead of a coarse-to-fine list (a tensor's len is its batch)."""
    config = b2b_config(tmp_path, iterations=2, val_every=2, save_every=2)
    config["stack"]["translator"] = {"type": "color_shift"}
    config["train"]["discriminator"]["scales"] = 1
    path = write(tmp_path / "one_image.yaml", config)
    assert main(["train", str(path), "--runs-dir", str(tmp_path / "runs")]) == 0
    final = load_training_state(tmp_path / "runs" / "b2b" / "checkpoints" / "step_00000002.pth")
    initial = build_stack(str(path)).state_dict()
    assert not torch.equal(initial["translator.mix.weight"], final["params"]["translator.mix.weight"])


def test_an_official_discriminator_file_is_where_training_starts(tmp_path):
    from deblurstack.plugins.blur2blur.discriminator import PatchGAN

    torch.manual_seed(5)
    official = PatchGAN(ndf=8).state_dict()
    save_atomic({f"module.{k}": v for k, v in official.items()}, tmp_path / "latest_net_D.pth")  # a DataParallel save
    node = {"type": "patchgan", "ndf": 8, "checkpoint": str(tmp_path / "latest_net_D.pth")}
    config = write(tmp_path / "b2b.yaml", b2b_config(tmp_path, iterations=1, val_every=0, discriminator=node))
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    trained = load_training_state(tmp_path / "runs" / "b2b" / "checkpoints" / "step_00000001.pth")["discriminator"]
    # one Adam step of lr 2e-4 from the file's weights (a fresh initialisation would be ~0.02 away)
    assert max((trained[k] - v).abs().max().item() for k, v in official.items()) <= 2.5e-4


def test_a_killed_adversarial_run_resumes_bit_identical(tmp_path, installed):
    config = write(tmp_path / "b2b.yaml", b2b_config(tmp_path, iterations=6, num_workers=1, deterministic=True))
    site = install_killer(installed)

    def train(folder: str, *extra: str, kill: str = "") -> subprocess.CompletedProcess:
        return train_process(config, tmp_path / folder, *extra, kill=kill, site=site)

    assert train("whole").returncode == 0
    died = train("killed", kill="step:3")
    assert died.returncode == -signal.SIGKILL, died.stderr
    resumed = train("killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole = load_training_state(tmp_path / "whole" / "b2b" / "checkpoints" / "step_00000006.pth")
    final = load_training_state(tmp_path / "killed" / "b2b" / "checkpoints" / "step_00000006.pth")
    different = unequal_tensors(whole, final)
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (lambda c: c["stack"].pop("translator"), "stack.translator", "trainer 'adversarial' trains it"),
        (lambda c: c["stack"]["backbone"].pop("frozen"), "stack.backbone.frozen", "trains only the translator"),
        (lambda c: c["stack"]["translator"].update(frozen=True), "stack.translator.frozen", "'translator' is frozen"),
        (
            lambda c: c["stack"]["translator"].update(
                generator={"type": "unet.tiny", "checkpoint": c["stack"]["backbone"]["checkpoint"]}
            ),
            "stack.translator.generator",
            "checkpoint: not applied to a backbone inside another component's parameters",
        ),
        (
            lambda c: c["train"]["known_blur"].update(synthesizer={"type": "frame_average"}),
            "train.known_blur.synthesizer",
            "makes a pair from 7 frames, not from one sharp image",
        ),
        (lambda c: c["train"]["discriminator"].update(scales=2), "train.discriminator.scales", "must match"),
        (
            lambda c: c["train"].update(known_blur={"type": "kernel_wizard"}),
            "data.train.patch_size",
            "multiple of 128",
        ),
        (lambda c: c["train"].update(gan_mode="wgan"), "train.gan_mode", "hinge"),
        (lambda c: c["train"]["discriminator"].update(norm="group"), "train.discriminator", "norm"),
        (lambda c: c["stack"]["backbone"].pop("checkpoint"), "stack.backbone.frozen", "random weights"),
    ],
)
def test_bad_adversarial_configs_are_refused_by_config_check_in_one_line(tmp_path, capsys, change, key, message):
    config = b2b_config(tmp_path)
    change(config)
    if key == "data.train.patch_size":
        config["data"]["train"]["patch_size"] = 192
    path = write(tmp_path / "bad.yaml", config)
    assert main(["config", "check", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"bad.yaml: {key}" in error and message in error, error


def test_all_three_methods_in_one_stack_build_train_test_and_run(tmp_path, capsys):
    """The Blur2Blur translator, SAM-Deblur's MAP prior and BladeNet's BSA guiding a NAFNet: one YAML."""
    masks = {"masks": {"type": "felzenszwalb", "scale": 20.0, "min_size": 20}}
    photos = {"type": "synthesized", "sharp_dir": "skimage", "synthesizer": {"type": "lbs"}}  # with a blur_mask
    config = {
        "name": "all_three",
        "seed": 0,
        "stack": {
            "translator": {"type": "blur2blur", "generator": "unet.tiny"},
            "priors": [{"type": "sam_map"}, {"type": "bsa", "points": ["decoder_s2", "decoder_s1"]}],
            "backbone": {
                "type": "nafnet",
                "width": 8,
                "enc_blk_nums": [1, 1],
                "middle_blk_num": 1,
                "dec_blk_nums": [1, 1],
            },
            "losses": [{"type": "l1"}],
        },
        "data": {
            "train": {**photos, "photos": TRAIN_PHOTOS, "max_side": 64, "patch_size": 32, "aux": masks},
            "test": {**photos, "photos": ["camera"], "max_side": 48, "fixed": True, "aux": masks},
        },
        "metrics": [{"type": "psnr"}],
        "train": {"type": "supervised", "iterations": 2, "batch_size": 2},
    }
    path = write(tmp_path / "all_three.yaml", config)
    runs = tmp_path / "runs"
    assert main(["train", str(path), "--runs-dir", str(runs)]) == 0
    best = runs / "all_three" / "checkpoints" / "step_00000002.pth"
    report = tmp_path / "report"
    args = ["--checkpoint", str(best), "--save-translated"]
    assert main(["test", str(path), *args, "--out", str(report)]) == 0
    assert (report / "summary.md").exists() and (report / "translated" / "camera.png").exists()
    photo = tmp_path / "photo.png"
    from deblurstack.engine.prepare import embedded_photos

    write_image(photo, embedded_photos(40, ["coffee"])["coffee"])
    assert main(["run", str(path), str(photo), "--out", str(tmp_path / "out"), *args]) == 0
    assert (tmp_path / "out" / "photo.png").exists() and (tmp_path / "out" / "translated" / "photo.png").exists()


def test_adversarial_training_on_two_processes_matches_one_process(tmp_path):
    """torchrun: two ranks at batch 1 make the step one process makes at batch 2: gradients averaged over the ranks,
    and the penalty's mixing weights and the known blur drawn by each sample's place in the global batch.

    One step is compared: from the second on, Adam turns rounding-level differences of gradients near zero into
    steps of +-lr (the biases before an instance norm get such gradients from the first step: the norm cancels
    them, so their gradient is zero but for rounding), and the runs drift apart without any difference in logic.
    """
    config = b2b_config(tmp_path, iterations=1, val_every=0, save_every=1)
    config["stack"]["translator"]["generator"] = {"type": "unet.tiny", "norm": "none"}  # no batch statistics
    path = write(tmp_path / "b2b.yaml", config)
    alone = train_process(path, tmp_path / "one", "train.batch_size=2")
    assert alone.returncode == 0, alone.stderr
    ranks = train_process(path, tmp_path / "two", "train.batch_size=1", processes=2)
    assert ranks.returncode == 0, ranks.stderr
    one = load_training_state(tmp_path / "one" / "b2b" / "checkpoints" / "step_00000001.pth")
    two = load_training_state(tmp_path / "two" / "b2b" / "checkpoints" / "step_00000001.pth")
    before_norm = {"model.2.bias", "model.5.bias", "model.8.bias"}
    for part in ("params", "discriminator"):
        for key, value in one[part].items():
            if part == "discriminator" and key in before_norm:
                continue
            assert torch.allclose(value, two[part][key], rtol=1e-4, atol=1e-5), f"{part}.{key}"


def test_the_example_configs_are_refused_only_for_their_missing_data_and_weights(tmp_path, capsys):
    """paper.yaml names real datasets and weight files, which this machine lacks; nothing else may be wrong with it
    or its variants. small.yaml needs known.yaml's trained deblurrer, known.yaml checks as it is."""
    examples = Path(__file__).resolve().parents[1] / "examples" / "blur2blur"
    assert main(["config", "check", str(examples / "known.yaml")]) == 0
    missing = ("no such file", "no such folder")
    for variant in ("", "synthesizer", "known_images", "mimo_unet_plus", "restormer"):
        capsys.readouterr()
        args = ["config", "check", str(examples / "paper.yaml"), *(["--variant", variant] if variant else [])]
        assert main(args) == 2
        problems = capsys.readouterr().err.strip().splitlines()
        assert problems and all(any(m in line for m in missing) for line in problems), problems
    missing_deblurrer = f"vars.deblurrer={tmp_path / 'best.pth'}"  # known.yaml's run is not here
    assert main(["config", "check", str(examples / "small.yaml"), missing_deblurrer]) == 2
    assert capsys.readouterr().err.strip().endswith(f"stack.backbone.checkpoint: no such file: {tmp_path / 'best.pth'}")
    save_atomic(
        build_stack({"stack": {"backbone": {"type": "unet.small"}}}).backbone.state_dict(), tmp_path / "best.pth"
    )
    assert main(["config", "check", str(examples / "small.yaml"), missing_deblurrer]) == 0
    # variant kernel_wizard also needs a KernelWizard trained by kernel_wizard.yaml's small variant
    wizard = [missing_deblurrer, f"vars.kernel_wizard={tmp_path / 'wizard.pth'}", "--variant", "kernel_wizard"]
    assert main(["config", "check", str(examples / "small.yaml"), *wizard]) == 2
    missing_wizard = f"train.known_blur.weights: no such file: {tmp_path / 'wizard.pth'}"
    assert capsys.readouterr().err.strip().endswith(missing_wizard)
    shape = {"nf": 8, "front_blocks": 1, "back_blocks": 2, "kernel_dim": 32, "extractor_blocks": 0}
    save_atomic(KernelWizard(**shape).state_dict(), tmp_path / "wizard.pth")
    assert main(["config", "check", str(examples / "small.yaml"), *wizard]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("tile", [None, 40])
def test_saving_translated_images_runs_the_translator_once_per_image(tmp_path, tile):
    """``test --save-translated`` with image grids and ``run --save-translated``: the translated image is the one
    the deblurrer saw (taken from the same pass, tiled alike), not a second run of the translator."""
    from deblurstack.compose import resolve_node
    from deblurstack.engine.evaluation import evaluate
    from deblurstack.engine.inference import run_on_files
    from deblurstack.engine.prepare import embedded_photos

    stack = build_stack(
        {"stack": {"translator": {"type": "blur2blur", "generator": "unet.tiny"}, "backbone": {"type": "unet.tiny"}}}
    ).eval()
    calls = []
    stack.translator.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    blur = {"type": "motion_blur", "kernel_size": 9, "max_length": 6.0}
    photos = {"type": "synthesized", "sharp_dir": "skimage", "photos": ["camera", "coffee"], "max_side": 56}
    dataset = resolve_node("dataset", {**photos, "synthesizer": blur}, "data.test").build()
    result = evaluate(stack, dataset, [], keep_samples=2, translated_to=tmp_path / "translated", tile=tile, overlap=8)
    tiles = 1 if tile is None else 4  # 56 x 56 (camera) and 56 x 37 (coffee) in 40-pixel tiles: 2 x 2 and 2 x 1
    assert len(calls) == (2 if tile is None else 4 + 2)
    if tile is None:
        with torch.inference_mode():
            expected = stack.translator(dataset[0]["input"][None])[-1].clamp(0, 1)[0]
        assert torch.allclose(result.samples[0].translated, expected, atol=1e-6)
    calls.clear()
    photo = tmp_path / "photo.png"
    write_image(photo, embedded_photos(56, ["camera"])["camera"])
    run_on_files(stack, [photo], tmp_path / "out", torch.device("cpu"), tile=tile, overlap=8, save_translated=True)
    assert len(calls) == tiles and (tmp_path / "out" / "translated" / "photo.png").is_file()
