"""The ``kernel_wizard`` trainer (a KernelWizard learnt on known pairs, no stack) and the ``cosine_restarts``
schedule it uses: a run that trains, validates, resumes and whose checkpoint the ``known_blur`` generation loads;
the config check of a config without a stack; the schedule against its definition."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from deblurstack import resolve_config
from deblurstack.cli import main
from deblurstack.engine.checkpoints import load_training_state
from deblurstack.engine.supervised import make_scheduler
from deblurstack.plugins.blur2blur.kernel_training import Reblurring
from deblurstack.plugins.blur2blur.kernel_wizard import KernelWizard
from deblurstack.plugins.blur2blur.known_blur import KernelWizardTransfer
from tests.processes import unequal_tensors

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "blur2blur" / "kernel_wizard.yaml"
NETWORK = {"nf": 4, "front_blocks": 0, "back_blocks": 1, "kernel_dim": 8, "extractor_blocks": 1}


def tiny_config(path: Path, **train) -> Path:
    pairs = {"type": "synthesized", "sharp_dir": "skimage", "photos": ["astronaut", "camera"]}
    pairs["synthesizer"] = {"type": "motion_blur", "kernel_size": 9, "max_length": 6.0}
    config = {
        "name": "kw",
        "seed": 1,
        "data": {
            "train": {**pairs, "max_side": 256, "patch_size": 256, "augment": True},
            "val": {**pairs, "max_side": 256, "fixed": True, "seed": 1},
        },
        "metrics": [{"type": "psnr"}],
        "train": {
            "type": "kernel_wizard",
            "network": NETWORK,
            "iterations": 4,
            "batch_size": 2,
            "lr": 1e-3,
            "val_every": 2,
            "save_every": 2,
            "keep_last": 2,
            "log_every": 1,
            **train,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_kernel_wizard_run_trains_validates_resumes_and_feeds_the_known_blur_generation(tmp_path):
    config = tiny_config(tmp_path / "kw.yaml", ema_decay=0.5, scheduler="cosine_restarts", periods=[2, 2])
    runs = {name: tmp_path / name for name in ("whole", "cut")}
    assert main(["train", str(config), "--runs-dir", str(runs["whole"])]) == 0
    run = runs["whole"] / "kw"
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert "stack" not in written and written["train"]["network"] == NETWORK
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [row.rsplit(",", 1)[0] for row in rows[1:]] == ["2,val,psnr", "4,val,psnr"]

    # cut after the first checkpoint and resumed: every tensor of the whole run
    shutil.copytree(runs["whole"], runs["cut"])
    for name in ("step_00000004.pth", "best.pth"):
        (runs["cut"] / "kw/checkpoints" / name).unlink(missing_ok=True)
    assert main(["train", str(config), "--runs-dir", str(runs["cut"]), "--resume"]) == 0
    last = {name: load_training_state(r / "kw/checkpoints/step_00000004.pth") for name, r in runs.items()}
    assert not unequal_tensors(last["whole"], last["cut"])

    # the checkpoint holds the network under the official key names; known_blur reads it as GOPRO_woVAE.pth
    trained = KernelWizard(**NETWORK)  # what validation scored and known_blur loads: the EMA
    assert list(last["whole"]["params_ema"]) == list(trained.state_dict())
    trained.load_state_dict(last["whole"]["params_ema"])
    before = KernelWizard(**NETWORK).state_dict()
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())  # it trained
    checkpoint = run / "checkpoints" / "step_00000004.pth"
    known_blur = KernelWizardTransfer(type="kernel_wizard", weights=str(checkpoint), network=NETWORK).build().eval()
    sharp, known_sharp, known_blurry = torch.rand(3, 1, 3, 256, 256)
    batch = {"sharp": sharp, "known_sharp": known_sharp, "known_blur": known_blurry}
    with torch.no_grad():
        torch.testing.assert_close(known_blur(batch, (0, 0), [0]), trained.eval().transfer(*batch.values()))

    # validation scored the re-blurred sharp image against the blurry one (the view's roles), as the log says
    resolved = resolve_config(config)
    view = Reblurring(resolved.build_dataset("val"))
    sample, pair = view[0], resolved.build_dataset("val")[0]  # the view swaps the roles
    assert torch.equal(sample["input"], pair["target"]) and torch.equal(sample["target"], pair["input"])
    validated = trained.eval()
    psnr = resolved.build_metrics()[0]
    scores = []
    with torch.no_grad():
        for sample in (view[i] for i in range(len(view))):
            reblurred = validated(sample["input"][None], sample["blurry"][None]).clamp(0, 1)
            scores.append(psnr(reblurred, sample["target"][None], {})["psnr"])
    assert float(rows[-1].rsplit(",", 1)[1]) == pytest.approx(sum(scores) / len(scores), abs=1e-4)


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        ({"stack": {"backbone": {"type": "unet.tiny"}}}, "stack", "trains a network of its own, not a stack"),
        ({"train.periods": [1, 2], "train.scheduler": "cosine_restarts"}, "train.periods", "add up to 3"),
        ({"data.train.patch_size": 192}, "data.train.patch_size", "is 192, but KernelWizard needs crops"),
        ({"train.network.use_vae": True}, "train.network.use_vae", "the VAE variant"),
        ({"train.network.nf": 0}, "train.network.nf", "greater than or equal to 1"),
        ({"train.network.kernel_size": 3}, "train.network.kernel_size", "extra inputs are not permitted"),
        ({"train.network.in_channels": 1}, "train.network.in_channels", "the pairs are RGB images"),
        ({"train.val_tile": 256}, "train.val_tile", "validated on whole centred crops"),
        ({"train.type": "kernel_wizzard"}, "train.type", "did you mean 'kernel_wizard'"),
    ],
)
def test_a_bad_kernel_wizard_config_is_one_line_naming_its_key(tmp_path, capsys, edit, key, problem):
    data = yaml.safe_load(tiny_config(tmp_path / "kw.yaml").read_text())
    for dotted, value in edit.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(config)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1, errors
    assert f"bad.yaml: {key}: " in errors[0] and problem in errors[0]


@pytest.mark.parametrize(("extractor_blocks", "accepted"), [(0, True), (1, False)])
def test_crops_of_128_fit_a_kernel_extractor_without_blocks_only(tmp_path, capsys, extractor_blocks, accepted):
    # the blocks reflect-pad the code map by 1, which needs a map of 2 x 2 (crops of 256); without them 1 x 1 will do
    network = {**NETWORK, "extractor_blocks": extractor_blocks}
    data = yaml.safe_load(tiny_config(tmp_path / "kw.yaml", network=network).read_text())
    data["data"]["train"]["patch_size"] = 128
    (tmp_path / "kw.yaml").write_text(yaml.safe_dump(data))
    assert main(["config", "check", str(tmp_path / "kw.yaml")]) == (0 if accepted else 2)
    if accepted:  # and the network takes them
        assert KernelWizard(**network).kernel(torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128)).shape[-1] == 1
    else:
        assert "data.train.patch_size: is 128, but KernelWizard needs crops" in capsys.readouterr().err


def test_a_stackless_config_says_so_where_a_stack_is_needed(tmp_path, capsys):
    config = tiny_config(tmp_path / "kw.yaml")
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "variants": {"wide": {"train.network.nf": 8}}}))
    assert main(["ablation", str(config), "--splits", "val", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "train.type: trainer 'kernel_wizard' trains a network of its own" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything trained
    assert main(["test", str(config), "--split", "val", "--checkpoint", str(config)]) == 2
    assert (
        "stack: missing: this config trains a network of its own (trainer 'kernel_wizard')" in capsys.readouterr().err
    )


def test_the_example_config_checks_at_paper_scale_and_its_small_variant():
    resolved = resolve_config(EXAMPLE, ["vars.gopro=."], splits=[])
    assert resolved.data["train"]["network"] == {}  # GOPRO_woVAE's shape, written out as the config would give it
    trainer = resolved.build_trainer()
    assert (trainer.lr, trainer.betas, trainer.batch_size, trainer.iterations) == (1e-4, (0.9, 0.99), 16, 600_000)
    assert trainer.periods == (50_000, 100_000, 150_000, 150_000, 150_000) and trainer.eta_min == 1e-8
    with torch.device("meta"):
        assert sum(p.numel() for p in resolved.build_model().parameters()) == 49_205_187  # GOPRO_woVAE's
    small = resolve_config(EXAMPLE, variant="small").build_trainer()
    assert sum(small.periods) == small.iterations


def test_cosine_restarts_follows_its_definition():
    """Within each period a cosine from lr to eta_min; back at lr at each restart; eta_min after the last."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1e-2)
    scheduler = make_scheduler("cosine_restarts", optimizer, 12, 1e-4, (), 0.5, (4, 8))
    rates = []
    for _ in range(14):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    cosine = lambda t, period: 1e-4 + (1e-2 - 1e-4) * (1 + math.cos(math.pi * t / period)) / 2  # noqa: E731
    expected = [cosine(t, 4) for t in range(4)] + [cosine(t, 8) for t in range(8)] + [1e-4, 1e-4]
    assert rates == pytest.approx(expected, rel=1e-9)
