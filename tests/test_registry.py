"""Discovery through entry points, failure isolation, duplicates, blocking, lookup."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deblurstack import ConfigError, PluginError, PluginWarning, resolve_config
from deblurstack.registry import PluginManager, create_plugin_manager

GOOD_PLUGIN = """
from deblurstack import LossRecord, hookimpl

@hookimpl
def deblurstack_losses():
    return [LossRecord(name="good_loss", factory="torch.nn:L1Loss", summary="A loss from a third party")]
"""


def test_builtins_are_registered_through_entry_points():
    manager = create_plugin_manager()
    infos = {info.name: info for info in manager.plugin_infos()}
    assert infos["unet"].distribution.startswith("deblurstack ")
    assert infos["unet"].hooks == ("deblurstack_backbones",)
    assert "backbone:unet" in infos["unet"].components
    assert {"l1", "charbonnier", "psnr"} <= set(manager.components("loss"))
    assert manager.failures == []


def test_a_third_party_distribution_is_discovered(installed):
    installed("deblurstack-good", {"good_plugin": GOOD_PLUGIN}, {"good": "good_plugin"}, version="2.5")
    manager = create_plugin_manager()
    component = manager.get("loss", "good_loss")
    assert (component.plugin, component.distribution) == ("good", "deblurstack-good 2.5")
    assert manager.get("backbone", "unet").distribution.startswith("deblurstack ")


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(installed):
    installed("deblurstack-broken", {"broken_plugin": "import not_a_module_anywhere\n"}, {"broken": "broken_plugin"})
    installed("deblurstack-good", {"good_plugin2": GOOD_PLUGIN}, {"good2": "good_plugin2"})
    with pytest.warns(
        PluginWarning,
        match=r"plugin 'broken' \(deblurstack-broken 1.0\): failed to load: "
        r"ModuleNotFoundError: No module named 'not_a_module_anywhere'; skipped",
    ):
        manager = create_plugin_manager()
    assert "good_loss" in manager.components("loss") and "unet" in manager.components("backbone")
    assert [f.plugin for f in manager.failures] == ["broken"]


def test_naming_a_component_of_a_plugin_that_failed_to_load_says_why(installed):
    installed("deblurstack-lode", {"lode_plugin": "import not_a_module_anywhere\n"}, {"lode": "lode_plugin"})
    with pytest.warns(PluginWarning):
        manager = create_plugin_manager()
    config = {"stack": {"priors": [{"type": "lode"}], "backbone": {"type": "unet"}, "losses": [{"type": "l1"}]}}
    with pytest.raises(ConfigError) as caught:
        resolve_config(config, manager=manager)
    (problem,) = caught.value.problems
    assert problem.startswith("<dict>: stack.priors[0].type: unknown prior 'lode'")
    assert problem.endswith(
        "plugin 'lode' (deblurstack-lode 1.0): failed to load: ModuleNotFoundError: "
        "No module named 'not_a_module_anywhere' (it may provide 'lode')"
    )


def test_strict_mode_makes_a_failing_plugin_fatal(installed, monkeypatch):
    installed("deblurstack-broken", {"broken_plugin3": "raise RuntimeError('boom')\n"}, {"broken3": "broken_plugin3"})
    monkeypatch.setenv("DEBLURSTACK_STRICT_PLUGINS", "1")
    with pytest.raises(
        PluginError, match=r"plugin 'broken3' \(deblurstack-broken 1.0\): failed to load: RuntimeError: boom"
    ):
        create_plugin_manager()


def test_a_hook_that_raises_is_reported_and_the_rest_still_loads(installed):
    source = """
from deblurstack import hookimpl, LossRecord

@hookimpl
def deblurstack_backbones():
    raise ValueError("no GPU found")

@hookimpl
def deblurstack_losses():
    return [LossRecord(name="still_here", factory="torch.nn:L1Loss", summary="survives")]
"""
    installed("deblurstack-flaky", {"flaky_plugin": source}, {"flaky": "flaky_plugin"})
    manager = create_plugin_manager()
    with pytest.warns(
        PluginWarning, match="plugin 'flaky' .*hook deblurstack_backbones raised ValueError: no GPU found"
    ):
        backbones = manager.components("backbone")
    assert "unet" in backbones
    assert "still_here" in manager.components("loss")


@pytest.mark.parametrize(
    "record, problem",
    [
        ('"not a record"', "expected a BackboneRecord, got str"),
        ('LossRecord(name="l", factory="a:b", summary="wrong kind")', "expected a BackboneRecord, got LossRecord"),
        ('BackboneRecord(name="Bad Name", factory="a:b", summary="s")', "name 'Bad Name' must match"),
        ('BackboneRecord(name="net", factory="no colon", summary="s")', "factory 'no colon' must be a callable"),
        ('BackboneRecord(name="net", factory="a:b", summary="two\\nlines")', "summary must be one non-empty line"),
        (
            'BackboneRecord(name="net", factory="a:b", summary="s", presets={"W 32": {}})',
            "preset name 'W 32' must match",
        ),
    ],
)
def test_a_malformed_record_is_reported_and_skipped(installed, record, problem):
    source = f"""
from deblurstack import hookimpl, BackboneRecord, LossRecord

@hookimpl
def deblurstack_backbones():
    return [{record}, BackboneRecord(name="fine_net", factory="torch.nn:Identity", summary="ok")]
"""
    installed("deblurstack-sloppy", {"sloppy_plugin": source}, {"sloppy": "sloppy_plugin"})
    manager = create_plugin_manager()
    with pytest.warns(PluginWarning, match=r"plugin 'sloppy' \(deblurstack-sloppy 1.0\): malformed backbone record"):
        backbones = manager.components("backbone")
    assert "fine_net" in backbones
    assert problem in str(manager.failures[0])


@pytest.mark.parametrize(
    "returned, got",
    [
        ('"unet_v2"', "got str 'unet_v2'"),
        ('BackboneRecord(name="solo", factory="torch.nn:Identity", summary="not in a list")', "got BackboneRecord"),
        ('{"name": "net"}', "got dict"),
        ("42", "got int 42"),
    ],
)
def test_a_hook_returning_something_other_than_a_list_is_one_failure_line(installed, returned, got):
    source = f"""
from deblurstack import hookimpl, BackboneRecord

@hookimpl
def deblurstack_backbones():
    return {returned}
"""
    installed("deblurstack-single", {"single_plugin": source}, {"single": "single_plugin"})
    manager = create_plugin_manager()
    with pytest.warns(PluginWarning) as caught:
        backbones = manager.components("backbone")
    messages = [str(w.message) for w in caught if "single" in str(w.message)]
    assert len(messages) == 1, messages
    assert "hook deblurstack_backbones must return a list of BackboneRecord, " + got in messages[0]
    assert "unet" in backbones and "solo" not in backbones


def test_a_duplicate_of_a_builtin_name_names_both_distributions(installed):
    source = """
from deblurstack import hookimpl, BackboneRecord

@hookimpl
def deblurstack_backbones():
    return [BackboneRecord(name="unet", factory="torch.nn:Identity", summary="my own unet")]
"""
    installed("deblurstack-copycat", {"copycat_plugin": source}, {"copycat": "copycat_plugin"}, version="0.3")
    manager = create_plugin_manager()
    with pytest.raises(PluginError) as caught:
        manager.components("backbone")
    message = str(caught.value)
    assert "backbone 'unet' is registered twice" in message
    assert "plugin 'unet' (deblurstack 0.1.0)" in message and "plugin 'copycat' (deblurstack-copycat 0.3)" in message
    assert "\n" not in message
    # blocking either one resolves the clash
    assert create_plugin_manager(blocked=["copycat"]).get("backbone", "unet").distribution.startswith("deblurstack ")


def test_plugins_can_be_blocked_by_name_and_through_the_environment(monkeypatch):
    assert "psnr" not in create_plugin_manager(blocked=["losses"]).components("loss")
    monkeypatch.setenv("DEBLURSTACK_BLOCK_PLUGINS", "unet, losses")
    manager = create_plugin_manager()
    assert "unet" not in manager.components("backbone") and "nafnet" in manager.components("backbone")
    # only the MIMO-UNet and Blur2Blur plugins' own losses are left
    assert set(manager.components("loss")) == {"mimo_unet", "vgg16_perceptual"}
    assert manager.is_blocked("unet")


def test_a_hook_implementation_without_a_spec_is_rejected(installed):
    source = """
from deblurstack import hookimpl

@hookimpl
def deblurstack_backbone():  # singular: a typo
    return []
"""
    installed("deblurstack-typo", {"typo_plugin": source}, {"typo": "typo_plugin"})
    with pytest.warns(PluginWarning, match=r"plugin 'typo' .*unknown hook 'deblurstack_backbone'"):
        manager = create_plugin_manager()
    assert not manager.has_plugin("typo")


def test_unknown_names_suggest_the_closest_and_list_the_choices():
    manager = create_plugin_manager()
    with pytest.raises(
        PluginError, match=r"^unknown backbone 'unte'; did you mean 'unet'\? \(choose from: .*, unet\)$"
    ):
        manager.get("backbone", "unte")
    with pytest.raises(
        PluginError, match=r"unknown loss 'focal' \(choose from: charbonnier, l1, mimo_unet, psnr, vgg16_perceptual\)"
    ):
        manager.get("loss", "focal")
    with pytest.raises(
        PluginError, match=r"unknown trainer 'gan' \(choose from: adversarial, kernel_wizard, phased, supervised\)"
    ):
        manager.get("trainer", "gan")
    with pytest.raises(
        PluginError,
        match=r"unknown prior 'sam_mpa'; did you mean 'sam_map'\? \(choose from: bsa, lbp, sam_cat, sam_map\)",
    ):
        manager.get("prior", "sam_mpa")
    with pytest.raises(PluginError, match="no translator is registered"):
        create_plugin_manager(blocked=["blur2blur"]).get("translator", "blur2blur")
    with pytest.raises(PluginError, match="unknown component kind 'backbones'; did you mean 'backbone'"):
        manager.components("backbones")


def test_find_matches_names_and_presets():
    manager = create_plugin_manager()
    assert [c.name for c in manager.find("unet.sm*")] == ["unet"]
    assert [c.name for c in manager.find("*", kind="loss")] == [
        "charbonnier",
        "l1",
        "mimo_unet",
        "psnr",
        "vgg16_perceptual",
    ]
    assert [c.name for c in manager.find("naf*")] == ["nafnet", "nafnet_baseline"]
    assert manager.find("nothing*") == []


def test_listing_components_imports_no_model_code_and_no_torch():
    code = (
        "import sys\n"
        "from deblurstack.cli import main\n"
        "assert main(['components', 'list']) == 0\n"
        "assert main(['plugins', 'list']) == 0\n"
        "heavy = [m for m in sys.modules if m == 'torch' or m.endswith(('.model', '.pixel'))]\n"
        "print('IMPORTED', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "IMPORTED []" in result.stdout
    assert "unet" in result.stdout and "psnr" in result.stdout


def test_a_fresh_manager_has_no_plugins(plugin_manager):
    assert plugin_manager.plugin_infos() == []
    assert isinstance(plugin_manager, PluginManager)
