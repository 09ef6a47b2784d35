"""BladeNet (LODE): official equivalence of lbp + bsa + unet.bladenet, the losses' definitions, BSA on other
backbones, the training-only blur mask, and the phased trainer (phases, frozen parts, exact resume).

The key names and shapes in tests/data/official/bladenet_*_keys.json were produced from the official classes
(komejisatori/BladeNet ``network/DeblurNet.py``: ``WholeNet(3, 3)`` and ``WholeNet(3, 3, usingMask=False,
usingSA=False)``); ``bladenet_wholenet_reference.pt`` holds the official ``WholeNet``'s outputs (eval mode) for the
weights :func:`official_weights` makes and a 32 x 48 BGR input.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deblurstack import build_stack, resolve_config
from deblurstack.checkpoint import load_state, save_atomic
from deblurstack.cli import main
from deblurstack.data import write_image
from deblurstack.engine.checkpoints import load_training_state, seed_global_generators
from deblurstack.plugins.bladenet.attention import attention_sum, dice_loss
from deblurstack.plugins.bladenet.perception import cross_entropy
from tests.official_weights import official_weights
from tests.processes import install_killer, train_process, unequal_tensors

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
BLADENET = {"priors": [{"type": "lbp"}, {"type": "bsa"}], "backbone": {"type": "unet.bladenet"}}


def test_the_official_wholenet_loads_strictly_and_gives_the_official_outputs_in_rgb():
    keys = json.loads((OFFICIAL / "bladenet_wholenet_keys.json").read_text())
    stack = build_stack({"stack": BLADENET})
    assert sum(p.numel() for p in stack.parameters()) == 40_778_568  # the paper's 40.8 M
    load_state(stack, stack.remap_state_dict(official_weights(keys)), "official WholeNet")  # strict
    reference = torch.load(OFFICIAL / "bladenet_wholenet_reference.pt", weights_only=True)
    with torch.no_grad():
        output = stack.eval().run(reference["input_bgr"].flip(1))  # our models take RGB
    assert (output.image.flip(1) - reference["output_bgr"]).abs().max() <= 1e-5
    assert (output.priors[0].channels - reference["mask_logits"]).abs().max() <= 1e-5
    fused = attention_sum(output.priors[1].extras["maps"], output.priors[1].extras["size"])
    assert (fused - reference["attention_sum"]).abs().max() <= 1e-5


def test_a_dataparallel_file_loads_through_the_yaml_checkpoint_and_bladenet_minus_is_the_plain_unet(tmp_path):
    keys = json.loads((OFFICIAL / "bladenet_wholenet_keys.json").read_text())
    weights = official_weights(keys)
    save_atomic({f"module.{k}": v for k, v in weights.items()}, tmp_path / "wholenet.pth")  # DataParallel keys
    stack = build_stack({"stack": {**BLADENET, "checkpoint": str(tmp_path / "wholenet.pth")}})
    direct = build_stack({"stack": BLADENET})
    load_state(direct, direct.remap_state_dict(weights), "official")
    ours, theirs = stack.state_dict(), direct.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    minus = json.loads((OFFICIAL / "bladenet_minus_keys.json").read_text())
    save_atomic(official_weights(minus), tmp_path / "minus.pth")
    plain = build_stack({"stack": {"backbone": {"type": "unet.bladenet"}, "checkpoint": str(tmp_path / "minus.pth")}})
    assert sum(p.numel() for p in plain.parameters()) == 17_267_523


def test_the_losses_equal_their_definitions():
    generator = torch.Generator().manual_seed(0)
    attention = 3 * torch.rand(2, 1, 8, 8, generator=generator)
    mask = (torch.rand(2, 1, 8, 8, generator=generator) > 0.5).float()
    official = 1 - (attention * mask).sum() / (attention.sum() + mask.sum())  # no factor 2, no epsilon
    assert torch.allclose(dice_loss(attention, mask), official)
    assert torch.allclose(
        dice_loss(attention, mask, "standard"), 1 - 2 * (attention * mask).sum() / (attention + mask).sum()
    )
    logits = torch.randn(2, 2, 8, 8, generator=generator)
    picked = torch.where(mask[:, 0] > 0.5, logits.log_softmax(1)[:, 1], logits.log_softmax(1)[:, 0])
    assert torch.allclose(cross_entropy(logits, mask), -picked.mean())


def test_bsa_guides_nafnet_and_a_missing_point_or_pointless_backbone_is_a_config_error(tmp_path, capsys):
    stack = build_stack(
        {
            "stack": {
                "priors": [{"type": "bsa", "points": ["decoder_s1", "decoder_s2"]}],
                "backbone": {
                    "type": "nafnet",
                    "width": 8,
                    "enc_blk_nums": [1, 1],
                    "dec_blk_nums": [1, 1],
                    "middle_blk_num": 1,
                },
            }
        }
    )
    image = torch.rand(1, 3, 20, 24)
    output = stack.run(image)
    assert len(output.priors[0].extras["maps"]) == 2
    loss = stack.priors[0].aux_losses(output.priors[0], {"blur_mask": torch.ones(1, 20, 24)})["dice"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {"stack": {"priors": [{"type": "bsa", "points": ["decoder_s64"]}], "backbone": {"type": "unet.tiny"}}}
        )
    )
    assert main(["config", "check", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "stack.priors[0]: points: the backbone offers no decoder_s64" in err and len(err.splitlines()) == 1


def _local_blur_data(root: Path, count: int = 4, size: int = 32, masks: bool = True) -> Path:
    """Pairs whose left half is blurred (a horizontal box blur), with the mask of that half."""
    rng = np.random.default_rng(0)
    for index in range(count):
        sharp = rng.random((size, size, 3), dtype=np.float32)
        blurry = sharp.copy()
        blurry[:, : size // 2] = (np.roll(sharp, 1, 1) + sharp + np.roll(sharp, -1, 1))[:, : size // 2] / 3
        mask = np.zeros((size, size), np.float32)
        mask[:, : size // 2] = 1
        write_image(root / "input" / f"{index}.png", blurry)
        write_image(root / "target" / f"{index}.png", sharp)
        if masks:
            write_image(root / "mask" / f"{index}.png", np.repeat(mask[..., None], 3, 2))
    return root


def _phased_config(tmp_path: Path, **train) -> Path:
    local = _local_blur_data(tmp_path / "local")
    global_ = _local_blur_data(tmp_path / "global", masks=False)
    config = {
        "name": "bladenet_tiny",
        "seed": 3,
        "stack": {
            "priors": [{"type": "lbp.tiny"}, {"type": "bsa", "points": ["decoder_s1", "decoder_s2"]}],
            "backbone": {"type": "unet.tiny", "output": "sigmoid"},
            "losses": [{"type": "l1"}],
        },
        "data": {
            "global": {
                "type": "paired_folder",
                "input_dir": str(global_ / "input"),
                "target_dir": str(global_ / "target"),
                "patch_size": 16,
            },
            "local": {
                "type": "local_blur_folder",
                "input_dir": str(local / "input"),
                "target_dir": str(local / "target"),
                "mask_dir": str(local / "mask"),
                "patch_size": 16,
                "augment": True,
            },
        },
        "metrics": [{"type": "psnr"}],
        "train": {
            "type": "phased",
            "cycles": 2,
            "save_every": 2,
            "log_every": 1,
            "phases": [
                {
                    "name": "global",
                    "split": "global",
                    "epochs": 1,
                    "batch_size": 2,
                    "trains": ["backbone", "priors.1"],
                    "prior_losses": False,
                    "scheduler": "multistep",
                    "milestones": [1],
                },
                {"name": "local", "split": "local", "epochs": 1, "batch_size": 2},
            ],
            **train,
        },
    }
    path = tmp_path / "bladenet.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_phase_with_mask_losses_on_data_without_masks_or_a_bad_split_or_part_is_a_config_error(tmp_path, capsys):
    config = _phased_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["train"]["phases"][0]["prior_losses"] = True
    data["train"]["phases"][1]["split"] = "lcoal"
    data["train"]["phases"][1]["trains"] = ["priors.7"]
    config.write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(config)]) == 2
    err = capsys.readouterr().err
    assert "data.global: prior 'lbp.tiny' (stack.priors[0]) needs input 'blur_mask'" in err
    assert "train.phases.1.split: names no data split; did you mean 'local'?" in err
    assert "train.phases.1.trains: 'priors.7' is no part of this stack" in err


def test_inference_needs_no_blur_mask(tmp_path):
    stack = build_stack(
        {
            "stack": {
                "priors": [{"type": "lbp.tiny"}, {"type": "bsa", "points": ["decoder_s1"]}],
                "backbone": {"type": "unet.tiny"},
            }
        }
    ).eval()
    with torch.no_grad():
        assert stack(torch.rand(1, 3, 21, 27)).shape == (1, 3, 21, 27)


def test_phases_alternate_train_only_their_parts_and_resume_bit_identical(tmp_path):
    config = _phased_config(tmp_path)
    resolved = resolve_config(config)
    assert [(u.split, u.prior_losses) for u in resolved.build_trainer().training_splits()] == [
        ("global", False),
        ("local", True),
    ]
    runs = tmp_path / "runs"
    assert main(["train", str(config), "--runs-dir", str(runs), "train.iterations=2"]) == 0
    first = load_training_state(runs / "bladenet_tiny" / "checkpoints" / "step_00000002.pth")["params"]
    seed_global_generators(3)  # as `train` does before building: the same initial weights
    initial = build_stack(resolve_config(config).data)
    # step 1-2: the global phase (2 steps = one pass over 4 samples at batch 2): the perception net is untouched
    for key, value in first.items():
        if key.startswith("priors.0.") and not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, initial.state_dict()[key]), key
    assert any(not torch.equal(first[k], initial.state_dict()[k]) for k in first if k.startswith("backbone."))
    # an uninterrupted run of 8 steps against 2 + resume to 8
    assert main(["train", str(config), "--runs-dir", str(runs), "--resume", "latest"]) == 0
    resumed = load_training_state(runs / "bladenet_tiny" / "checkpoints" / "step_00000008.pth")
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "again")]) == 0
    straight = load_training_state(tmp_path / "again" / "bladenet_tiny" / "checkpoints" / "step_00000008.pth")
    for key in ("params", "optimizer.global", "optimizer.local", "scheduler.global", "scheduler.local"):
        assert _equal(resumed[key], straight[key]), key
    assert resumed["scheduler.global"]["last_epoch"] == 2  # stepped once per pass of its phase: 2 passes in 8 steps
    log = (runs / "bladenet_tiny" / "train.log").read_text()
    assert "loss/priors.0.ce" in log and "loss/priors.1.dice" in log


def test_a_phased_run_killed_in_the_middle_of_a_phase_resumes_bit_identical(tmp_path, installed):
    """SIGKILL after the first step of the local phase (so the newest checkpoint is one batch into that phase's
    stream of random crops), then halfway through writing a checkpoint one step into the second cycle's local
    phase; resumed each time, the last checkpoint equals an uninterrupted run's in every tensor (weights, both
    optimizers and schedulers, random states)."""
    config = _phased_config(tmp_path, save_every=1, keep_last=10)
    site = install_killer(installed)
    whole = train_process(config, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "killed" / "bladenet_tiny"
    died = train_process(config, tmp_path / "killed", kill="step:4", site=site)
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pth"))[-1] == "step_00000003.pth"  # mid-phase
    died = train_process(config, tmp_path / "killed", "--resume", kill="save:8", site=site)
    assert died.returncode == -signal.SIGKILL, died.stderr
    resumed = train_process(config, tmp_path / "killed", "--resume", site=site)  # from step 7: mid-phase again
    assert resumed.returncode == 0, resumed.stderr
    assert "step_00000007.pth at step 7" in (run / "train.log").read_text()
    final = load_training_state(run / "checkpoints" / "step_00000008.pth")
    straight = load_training_state(tmp_path / "whole" / "bladenet_tiny" / "checkpoints" / "step_00000008.pth")
    different = unequal_tensors(straight, final)
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_two_torchrun_processes_train_the_phases_as_one_process_with_the_whole_batch(tmp_path):
    config = _phased_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    for phase in data["train"]["phases"]:
        phase["batch_size"] = 4  # one step per pass over 4 samples: the same schedule on 1 and 2 processes
    config.write_text(yaml.safe_dump(data))
    # batch norm statistics differ across per-process batches by design
    norms = ["stack.priors.0.norm=none", "stack.priors.1.norm=none", "stack.backbone.norm=none"]
    alone = train_process(config, tmp_path / "one", *norms)
    assert alone.returncode == 0, alone.stderr
    halves = [f"train.phases.{i}.batch_size=2" for i in range(2)]
    ranks = train_process(config, tmp_path / "two", *norms, *halves, processes=2)
    assert ranks.returncode == 0, ranks.stderr
    one = load_training_state(tmp_path / "one" / "bladenet_tiny" / "checkpoints" / "step_00000004.pth")
    two = load_training_state(tmp_path / "two" / "bladenet_tiny" / "checkpoints" / "step_00000004.pth")
    for key, value in one["params"].items():
        assert torch.allclose(value, two["params"][key], rtol=1e-4, atol=1e-6), key


def test_the_bladenet_examples_and_every_variant_pass_the_config_check(tmp_path, capsys):
    examples = Path(__file__).resolve().parents[1] / "examples" / "bladenet"
    for variant in (None, "bladenet", "unet", "global_only"):
        assert (
            main(["config", "check", str(examples / "small.yaml"), *(["--variant", variant] if variant else [])]) == 0
        )
    for folder in (
        "REDS/train_sharp",
        "REDS/train_blur",
        "REDS/val_sharp",
        "REDS/val_blur",
        "lbs/input",
        "lbs/target",
        "lbs/blur_mask",
    ):
        (tmp_path / folder).mkdir(parents=True)
    paths = [f"vars.reds={tmp_path / 'REDS'}", f"vars.lbs={tmp_path / 'lbs'}"]
    for variant in (None, "unet", "lbp_only", "bsa_only", "global_only", "nafnet"):
        extra = ["--variant", variant] if variant else []
        assert main(["config", "check", str(examples / "paper.yaml"), *paths, *extra]) == 0, capsys.readouterr().err


def test_the_inference_fast_path_equals_the_layers_autograd_runs():
    priors = [{"type": "lbp.tiny"}, {"type": "bsa", "points": ["decoder_s1", "decoder_s2"]}]
    stack = build_stack({"stack": {"priors": priors, "backbone": {"type": "unet.small"}}}).eval()
    generator = torch.Generator().manual_seed(0)
    for module in stack.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # folding the identity would prove nothing
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
            module.weight.data.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=generator))
    image = torch.rand(2, 3, 37, 29, generator=generator)
    layers = stack(image)  # autograd on: BatchNorm layers, NCHW
    with torch.inference_mode():
        folded = stack(image)  # BatchNorm folded into the convolutions, channels-last
    assert layers.requires_grad and folded.is_contiguous()
    assert (layers - folded).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.phases.1.lr", -1, "train.phases.1.lr: input should be greater than 0 (got -1)"),
        ("train.phases.0.batch_size", 0, "train.phases.0.batch_size: input should be greater than or equal to 1"),
        ("train.phases.1.bogus", 3, "train.phases.1.bogus: extra inputs are not permitted"),
    ],
)
def test_a_bad_value_inside_a_phase_is_named_by_its_key_path_alone(tmp_path, capsys, key, value, message):
    """One line naming the value's own key path, without a dump of every phase, and no follow-on problems
    (which splits the trainer trains on is unknown until its node resolves)."""
    config = _phased_config(tmp_path)
    assert main(["config", "check", str(config), f"{key}={value}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"bladenet.yaml: {message}" in lines[0], lines
    assert "'name': 'global'" not in lines[0]


def test_a_broken_phase_is_the_only_problem_reported_for_the_small_study(capsys):
    """With the trainer's node broken, which splits it trains on is unknown: the metrics' inputs are not
    demanded of the training splits (data.global has no blur mask, and needs none: it is trained on)."""
    examples = Path(__file__).resolve().parents[1] / "examples" / "bladenet"
    assert main(["config", "check", str(examples / "small.yaml"), "train.phases.1.lr=-1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "small.yaml: train.phases.1.lr: input should be greater than 0 (got -1)" in lines[0]
