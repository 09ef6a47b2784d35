"""User mistakes on the command line: each is one line naming the file, option or plugin (exit 2), found before
anything is computed or written, and nothing a run, a dataset or a report holds is overwritten."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deblurstack.checkpoint import read_checkpoint, save_atomic
from deblurstack.cli import main
from deblurstack.data import write_bytes_atomic, write_image
from deblurstack.errors import CheckpointError
from deblurstack.registry import get_plugin_manager, set_plugin_manager


def error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def exit_code(arguments: list[str]) -> int:
    """``main``'s status, or the one argparse exits with on a bad option."""
    try:
        return main(arguments)
    except SystemExit as leaving:
        return int(leaving.code)


def test_files_written_atomically_get_the_permissions_of_a_plain_open(tmp_path):
    """mkstemp makes owner-only files: a checkpoint or a report must not be unreadable to the group."""
    mask = os.umask(0o022)
    try:
        save_atomic({"w": torch.zeros(1)}, tmp_path / "c.pth")
        write_bytes_atomic(tmp_path / "summary.md", b"x")
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.float32))
        with open(tmp_path / "plain.txt", "w"):
            pass
    finally:
        os.umask(mask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"c.pth": 0o644, "summary.md": 0o644, "a.png": 0o644, "plain.txt": 0o644}
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_text_file_or_a_folder_given_as_a_checkpoint_is_called_what_it_is(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(tmp_path / "notes.pth")
    assert (
        str(caught.value)
        == f"{tmp_path / 'notes.pth'}: not a torch checkpoint (neither torch's zip format nor a pickle)"
    )
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(tmp_path)
    assert str(caught.value) == f"{tmp_path}: a folder, not a checkpoint file (a run's are in <run>/checkpoints/)"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A unet.tiny config on two 24x32 pairs (input/, target/), with a test split."""
    tmp_path = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        sharp = rng.random((24, 32, 3)).astype(np.float32)
        write_image(tmp_path / "pairs" / "target" / f"{name}.png", sharp)
        write_image(tmp_path / "pairs" / "input" / f"{name}.png", 0.5 * sharp + 0.25)
    folders = {"input_dir": str(tmp_path / "pairs" / "input"), "target_dir": str(tmp_path / "pairs" / "target")}
    config = {
        "name": "tiny",
        "stack": {"backbone": {"type": "unet.tiny"}, "losses": [{"type": "l1"}]},
        "data": {
            "train": {"type": "paired_folder", **folders, "patch_size": 16},
            "test": {"type": "paired_folder", **folders},
        },
        "metrics": [{"type": "psnr"}],
        "train": {
            "type": "supervised",
            "iterations": 2,
            "batch_size": 2,
            "save_every": 2,
            "val_every": 0,
            "log_every": 1,
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_device_on_a_machine_without_one_is_one_line(tiny, tmp_path, capsys):
    assert main(["train", str(tiny), "--device", "cuda", "--runs-dir", str(tmp_path / "runs")]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(
        "deblurstack: error: --device 'cuda': no CUDA device is available here"
    )
    assert not (tmp_path / "runs").exists()


def test_blocking_a_plugin_that_is_not_installed_is_refused(capsys):
    assert main(["plugins", "list", "--block", "nafnett"]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("deblurstack: error: --block nafnett: no installed plugin of that name; did you mean")
    manager = get_plugin_manager()
    try:
        assert main(["plugins", "list", "--block", "nafnet"]) == 0
    finally:
        set_plugin_manager(manager)  # --block replaced the process-wide manager by one without nafnet


@pytest.fixture(scope="module")
def trained(tiny) -> Path:
    """The tiny config trained for 2 steps: its last checkpoint."""
    assert main(["train", str(tiny), "--runs-dir", str(tiny.parent / "runs")]) == 0
    return tiny.parent / "runs" / "tiny" / "checkpoints" / "step_00000002.pth"


def test_a_file_where_a_folder_is_written_is_one_line(tiny, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    photo = str(tiny.parent / "pairs" / "input" / "a.png")
    for command, option in [
        (["train", str(tiny), "--runs-dir", str(notes)], "--runs-dir"),
        (["run", str(tiny), photo, "--out", str(notes)], "--out"),
        (["test", str(tiny), "--out", str(notes)], "--out"),
        (["synth", "skimage", str(notes)], "out"),
        (["quickstart", "--data-only", "--data", str(notes)], "--data"),
    ]:
        assert main(command) == 2, command
        assert error_lines(capsys) == [f"deblurstack: error: {option} {notes}: a file, not a folder"], command
    assert notes.read_text() == "mine"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--tile", "-4"], "argument --tile: must be at least 1, got -4"),
        (["--tile", "16", "--overlap", "8"], "--tile 16 --overlap 8: the overlap must be at least 0 and under half"),
        (["--overlap", "-1"], "argument --overlap: must be at least 0, got -1"),
        (["--tlc", "0"], "argument --tlc: must be at least 1, got 0"),
    ],
)
def test_bad_tiling_options_are_one_line_before_any_work(tiny, trained, tmp_path, capsys, arguments, message):
    photo = str(tiny.parent / "pairs" / "input" / "a.png")
    for command in (["run", str(tiny), photo, "--out", str(tmp_path / "out")], ["test", str(tiny)]):
        assert exit_code([*command, "--checkpoint", str(trained), *arguments]) == 2
        lines = error_lines(capsys)
        assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--per-image", "0"], "argument --per-image: must be at least 1, got 0"),
        (["--max-side", "-1"], "argument --max-side: must be at least 1, got -1"),
        (["--seed", "x"], "argument --seed: expected an integer, got 'x'"),
    ],
)
def test_bad_synth_numbers_are_one_line(tmp_path, capsys, arguments, message):
    assert exit_code(["synth", "skimage", str(tmp_path / "pairs"), *arguments]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "pairs").exists()


def test_run_never_replaces_an_input_and_replaces_earlier_outputs_only_when_told(tiny, trained, tmp_path, capsys):
    photos = tiny.parent / "pairs" / "input"
    copies = tmp_path / "photos"
    copies.mkdir()
    for name in ("a.png", "b.png"):
        (copies / name).write_bytes((photos / name).read_bytes())
    before = {p.name: p.read_bytes() for p in copies.iterdir()}
    run = ["run", str(tiny), "--checkpoint", str(trained)]
    for out in (copies, tmp_path / "photos" / "."):  # the input folder itself, however it is spelt
        assert main([*run, str(copies), "--out", str(out), "--overwrite"]) == 2
        lines = error_lines(capsys)
        assert len(lines) == 1 and "would replace the input" in lines[0], lines
    assert {p.name: p.read_bytes() for p in copies.iterdir()} == before

    out = tmp_path / "out"
    (out / "a.png").parent.mkdir()
    (out / "a.png").write_bytes(b"an earlier result")
    assert main([*run, str(copies), "--out", str(out)]) == 2
    assert error_lines(capsys) == [
        f"deblurstack: error: --out {out}: {out / 'a.png'} already exist(s); pass --overwrite to replace them, or "
        "choose another folder"
    ]
    assert (out / "a.png").read_bytes() == b"an earlier result" and not (out / "b.png").exists()
    assert main([*run, str(copies), "--out", str(out), "--overwrite"]) == 0
    assert (out / "a.png").read_bytes() != b"an earlier result" and (out / "b.png").is_file()

    other = tmp_path / "other"  # two inputs of one name would write one file twice
    other.mkdir()
    (other / "a.png").write_bytes((photos / "b.png").read_bytes())
    assert main([*run, str(copies / "a.png"), str(other / "a.png"), "--out", str(tmp_path / "both")]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "would both be written to" in lines[0], lines
    assert not (tmp_path / "both").exists()


def test_synth_into_a_folder_holding_a_dataset_is_refused(tmp_path, capsys):
    command = ["synth", "skimage", str(tmp_path / "pairs"), "--max-side", "32"]
    assert main(command) == 0
    capsys.readouterr()
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "pairs").rglob("*.png")}
    assert main([*command, "--seed", "5"]) == 2
    message = "already holds a dataset (input/ is not empty); choose another folder"
    assert error_lines(capsys) == [f"deblurstack: error: {tmp_path / 'pairs'}: {message}"]
    assert {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "pairs").rglob("*.png")} == before


def test_a_resume_that_fails_leaves_the_run_folder_as_it_was(tiny, trained, tmp_path, capsys):
    run = trained.parent.parent
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.pth"
    for content in (b"not a checkpoint\n", trained.read_bytes()[:200]):
        bad.write_bytes(content)
        code = main(["train", str(tiny), "train.lr=0.5", "--runs-dir", str(run.parent), "--resume", str(bad)])
        assert code == 2
        lines = error_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith(f"deblurstack: error: {bad}: "), lines
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # no config.yaml rewritten, no environment_resumed_*.yaml added


def test_a_damaged_results_file_is_one_line_naming_it(tmp_path, capsys):
    folder = tmp_path / "study-ablation"
    folder.mkdir()
    (folder / "results.json").write_text('{"results": [')
    for command in (["report", str(folder)], ["compare", str(folder), "--a", "input", "--b", "x"]):
        assert main(command) == 2, command
        lines = error_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith(f"deblurstack: error: {folder / 'results.json'}: not readable")


def test_export_refuses_a_name_without_onnx_and_replaces_a_file_only_when_told(tiny, tmp_path, capsys):
    assert main(["export", str(tiny), str(tmp_path / "model.bin")]) == 2
    assert error_lines(capsys) == [f"deblurstack: error: {tmp_path / 'model.bin'}: an ONNX file's name ends in .onnx"]
    (tmp_path / "folder.onnx").mkdir()
    assert main(["export", str(tiny), str(tmp_path / "folder.onnx")]) == 2
    assert error_lines(capsys) == [f"deblurstack: error: {tmp_path / 'folder.onnx'}: a folder, not a file name"]
    (tmp_path / "model.onnx").write_bytes(b"an earlier export")
    assert main(["export", str(tiny), str(tmp_path / "model.onnx")]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "already exists; pass --overwrite" in lines[0]
    assert (tmp_path / "model.onnx").read_bytes() == b"an earlier export"


def test_an_override_that_is_not_yaml_says_what_is_wrong_with_it(tiny, capsys):
    assert main(["config", "check", str(tiny), "stack.backbone.width=[1,"]) == 2
    message = "invalid YAML value: did not find expected node content"
    assert error_lines(capsys) == [f"deblurstack: error: override 'stack.backbone.width=[1,': {message}"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("stack=5", "stack: must be a mapping with keys"),
        ("stack.losses={type: l1}", "stack.losses: must be a list of loss nodes"),
    ],
)
def test_a_malformed_stack_is_one_problem_not_a_cascade(tiny, capsys, override, message):
    """The empty-losses problem would follow from the same mistake."""
    assert main(["config", "check", str(tiny), override]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and f"{tiny}: {message}" in lines[0], lines
