"""The command line: listings, model cards, config check, exit codes and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from deblurstack import ConfigError, PluginWarning
from deblurstack.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_plugins_list_shows_distribution_version_hooks_and_components(capsys):
    assert main(["plugins", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PLUGIN", "DISTRIBUTION", "HOOKS", "COMPONENTS"]
    unet = next(line for line in lines if line.startswith("unet "))
    assert unet.split() == ["unet", "deblurstack", "0.1.0", "backbones", "backbone:unet"]


def test_components_list_filters_by_pattern_and_kind(capsys):
    assert main(["components", "list", "--kind", "loss"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[:2] for row in rows] == [
        ["loss", n] for n in ("charbonnier", "l1", "mimo_unet", "psnr", "vgg16_perceptual")
    ]
    assert main(["components", "list", "unet.t*"]) == 0
    out = capsys.readouterr().out
    assert "bladenet, small, tiny" in out and "psnr" not in out


def test_components_list_with_no_match_is_an_error(capsys):
    assert main(["components", "list", "nosuch*"]) == 2
    assert capsys.readouterr().err == "deblurstack: error: no component matches 'nosuch*'\n"


def test_components_show_prints_parameters_presets_and_size(capsys):
    assert main(["components", "show", "unet.tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backbone unet.tiny  (plugin unet, deblurstack 0.1.0)")
    assert "    width: int in [2, 4096] = 8  channels of the first level (BladeNet: 64)." in out
    assert "    depth: int in [1, 10] = 2  number of down-sampling levels (BladeNet: 4)." in out
    assert "    unet.bladenet: width=64, depth=4, output=sigmoid" in out
    assert "insertion_points: [decoder_s1, decoder_s2, decoder_s4, decoder_s8]" in out
    assert "size: 0.02 M parameters (16,731), 0.34 GMACs at 256x256" in out  # 336.6 M MACs by hand
    assert "  pad multiple: 4\n" in out and "built insertion points: decoder_s2 (32 ch), decoder_s1 (16 ch)" in out


def test_the_bladenet_unet_has_the_papers_size(capsys):
    # BladeNet's blur-perception U-Net (2 logits) has 17.27 M parameters; with a 3-channel head it has 65 more
    assert main(["components", "show", "unet.bladenet"]) == 0
    out = capsys.readouterr().out
    assert "size: 17.27 M parameters (17,267,523), 39.99 GMACs at 256x256" in out
    from deblurstack.plugins.unet.model import UNet

    assert sum(p.numel() for p in UNet(out_channels=2).parameters()) == 17_267_458


def test_components_show_of_an_unknown_name_or_preset(capsys):
    assert main(["components", "show", "unte"]) == 2
    assert capsys.readouterr().err == (
        "deblurstack: error: unknown component 'unte'; did you mean 'unet'? (see deblurstack components list)\n"
    )
    assert main(["components", "show", "unet.w32"]) == 2
    assert capsys.readouterr().err == (
        "deblurstack: error: unknown preset 'w32' of backbone 'unet' (presets: bladenet, small, tiny)\n"
    )


def test_config_check_applies_overrides(capsys):
    assert main(["config", "check", str(EXAMPLES / "unet_psnr.yaml"), "stack.backbone.width=4"]) == 0
    assert "    width: 4\n" in capsys.readouterr().out


def test_overrides_may_follow_options_and_anything_else_is_refused(tmp_path, capsys):
    config = str(EXAMPLES / "sam_deblur" / "small.yaml")
    for folder in ("train/input", "train/target", "test/input", "test/target"):  # the data folders must exist
        (tmp_path / folder).mkdir(parents=True)
    data = f"vars.data={tmp_path}"
    assert main(["config", "check", config, "--variant", "cat", data, "stack.backbone.width=4", "seed=3"]) == 0
    out = capsys.readouterr().out
    assert "    width: 4\n" in out and "\nseed: 3\n" in out and "  - type: sam_cat\n" in out
    with pytest.raises(SystemExit) as caught:
        main(["config", "check", config, "--variant", "cat", "stack.backbone.width=4", "stray"])
    assert caught.value.code == 2
    assert "unrecognized arguments: stack.backbone.width=4 stray" in capsys.readouterr().err
    photo = tmp_path / "photo.png"
    for where in (
        ["stack.backbone.widht=4", str(photo), "--out", "o"],
        [str(photo), "--out", "o", "stack.backbone.widht=4"],
    ):
        assert main(["run", config, data, *where]) == 2  # run takes overrides as every command does, anywhere
        assert "stack.backbone.widht: unknown parameter of backbone 'nafnet'" in capsys.readouterr().err


def test_usage_errors_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["components", "list", "--kind", "backbones"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'backbones'" in err


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stack: {backbone: {type: unte}}\n")
    with pytest.raises(ConfigError):
        main(["config", "check", str(bad), "--debug"])


def test_a_skipped_plugin_is_one_warning_line(installed, capsys):
    installed(
        "deblurstack-broken",
        {"broken_cli_plugin": "raise ImportError('needs a GPU')\n"},
        {"broken_cli": "broken_cli_plugin"},
    )
    from deblurstack.registry import set_plugin_manager

    previous = set_plugin_manager(None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", PluginWarning)  # the suite turns plugin warnings into errors
            assert main(["components", "list", "--kind", "backbone"]) == 0
    finally:
        set_plugin_manager(previous)
    assert capsys.readouterr().err == (
        "deblurstack: warning: plugin 'broken_cli' (deblurstack-broken 1.0): "
        "failed to load: ImportError: needs a GPU; skipped\n"
    )


def test_the_console_script_and_python_m_agree():
    script = Path(sys.executable).with_name("deblurstack")
    commands = [[sys.executable, "-m", "deblurstack", "components", "list"]]
    if script.exists():
        commands.append([str(script), "components", "list"])
    outputs = {subprocess.run(c, capture_output=True, text=True, check=True).stdout for c in commands}
    assert len(outputs) == 1 and "unet" in outputs.pop()


def test_a_torchrun_worker_leaves_with_its_exit_code_and_all_its_output(tmp_path):
    """Under WORLD_SIZE > 1 both entry points end with os._exit (no interpreter finalization, see cli.run): the
    piped output still arrives whole, a usage or config error keeps its status, and an exception that escapes
    (--debug) is printed with its traceback and exits 1."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("stack: {backbone: {type: unte}}\n")
    script = Path(sys.executable).with_name("deblurstack")
    entry_points = [[sys.executable, "-m", "deblurstack"], *([[str(script)]] if script.exists() else [])]
    environment = {**os.environ, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    for entry in entry_points:

        def ran(*args: str, entry: list[str] = entry) -> subprocess.CompletedProcess:
            return subprocess.run([*entry, *args], capture_output=True, text=True, env=environment, timeout=120)

        listed, alone = ran("components", "list"), subprocess.run([*entry, "components", "list"], capture_output=True)
        assert listed.returncode == 0 and listed.stdout == alone.stdout.decode() and "unet" in listed.stdout
        refused = ran("config", "check", str(bad))
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "unte" in refused.stderr
        assert ran("components", "list", "--kind", "backbones").returncode == 2
        raised = ran("config", "check", str(bad), "--debug")
        assert raised.returncode == 1 and "Traceback" in raised.stderr and "ConfigError" in raised.stderr


def test_config_check_builds_the_stack_so_a_frozen_part_without_weights_is_refused(tmp_path, capsys):
    path = tmp_path / "frozen.yaml"
    path.write_text("stack:\n  backbone: {type: unet.tiny, frozen: true}\n  losses: [{type: l1}]\n")
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"deblurstack: error: {path}: stack.backbone.frozen: a frozen backbone learns nothing from random weights: "
        "set stack.backbone.checkpoint"
    ]
