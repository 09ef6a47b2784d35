"""Meta-tests on the extension API (datasette style), and one test per hook."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import pytest

from deblurstack import BackboneRecord, LossRecord, hookimpl, hookspecs, records
from deblurstack.registry import PluginManager

TESTS = Path(__file__).parent
SPECS = sorted(
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "deblurstack_spec")
)


def test_specs_exist_for_every_kind():
    assert {cls.hook for cls in records.RECORD_TYPES} <= set(SPECS)
    assert len(SPECS) >= 12


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert "Example::" in doc, f"{name}'s docstring has no 'Example::' block"
    assert "@hookimpl" in doc, f"{name}'s example does not show an implementation"


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_has_a_test_that_calls_it(name):
    defined = set()
    for path in TESTS.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        defined |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert f"test_hook_{name}" in defined, f"no test named test_hook_{name}"


def test_the_spec_module_holds_only_specs():
    public = {
        name
        for name, value in vars(hookspecs).items()
        if inspect.isfunction(value) and value.__module__ == hookspecs.__name__
    }
    assert public == set(SPECS)


# ---------------------------------------------------------------- registration hooks


def _registered(plugin_manager, kind, record):
    class Plugin:
        pass

    setattr(Plugin, records.KINDS[kind].hook, staticmethod(hookimpl(lambda: [record])))
    plugin_manager.register(Plugin(), name=f"p_{kind}")
    found = plugin_manager.get(kind, record.name)
    assert found.record is record and found.plugin == f"p_{kind}"
    # calling the hook through pluggy gives the same records
    assert [record] in getattr(plugin_manager.hook, records.KINDS[kind].hook)()


def test_hook_deblurstack_backbones(plugin_manager):
    _registered(plugin_manager, "backbone", BackboneRecord(name="b", factory="torch.nn:Identity", summary="s"))


def test_hook_deblurstack_priors(plugin_manager):
    _registered(plugin_manager, "prior", records.PriorRecord(name="p", factory="torch.nn:Identity", summary="s"))


def test_hook_deblurstack_translators(plugin_manager):
    _registered(
        plugin_manager, "translator", records.TranslatorRecord(name="t", factory="torch.nn:Identity", summary="s")
    )


def test_hook_deblurstack_discriminators(plugin_manager, installed):
    """The spec's example, installed as a package, registers a discriminator that passes the conformance checks and
    that an adversarial trainer's config can name."""
    example = hookspecs.deblurstack_discriminators.__doc__.split("Example::\n")[1]
    installed("deblurstack-critic", {"tiny_critic": textwrap.dedent(example)}, {"critic": "tiny_critic"})
    plugin_manager.load_entrypoints()
    _registered(
        plugin_manager,
        "discriminator",
        records.DiscriminatorRecord(name="di", factory="torch.nn:Identity", summary="s"),
    )
    from deblurstack.testing import check_component

    check_component("discriminator", "tiny_critic", {"scales": 3})


def test_hook_deblurstack_losses(plugin_manager):
    _registered(plugin_manager, "loss", LossRecord(name="l", factory="torch.nn:L1Loss", summary="s"))


def test_hook_deblurstack_datasets(plugin_manager):
    _registered(plugin_manager, "dataset", records.DatasetRecord(name="d", factory="builtins:dict", summary="s"))


def test_hook_deblurstack_metrics(plugin_manager):
    _registered(plugin_manager, "metric", records.MetricRecord(name="m", factory="builtins:dict", summary="s"))


def test_hook_deblurstack_mask_sources(plugin_manager):
    _registered(
        plugin_manager, "mask_source", records.MaskSourceRecord(name="ms", factory="builtins:dict", summary="s")
    )


def test_hook_deblurstack_trainers(plugin_manager):
    _registered(plugin_manager, "trainer", records.TrainerRecord(name="tr", factory="builtins:dict", summary="s"))


def test_hook_deblurstack_synthesizers(plugin_manager):
    _registered(
        plugin_manager, "synthesizer", records.SynthesizerRecord(name="sy", factory="builtins:dict", summary="s")
    )


# ---------------------------------------------------------------- lifecycle hooks


class Recorder:
    """A logger-like plugin that takes fewer arguments than some specs offer (opt-in arguments)."""

    def __init__(self):
        self.events = []

    @hookimpl
    def deblurstack_run_start(self, run):
        self.events.append(("start", run.step))

    @hookimpl
    def deblurstack_train_step_end(self, run, logs):
        self.events.append(("step", run.step, dict(logs)))

    @hookimpl
    def deblurstack_validation_end(self, metrics, samples):
        self.events.append(("validation", dict(metrics), [s.name for s in samples]))

    @hookimpl
    def deblurstack_run_end(self, run, status):
        self.events.append(("end", status))


@pytest.fixture
def run_state(tmp_path):
    import torch

    from deblurstack import RunState

    return RunState(directory=tmp_path, config={"name": "x"}, model=torch.nn.Identity(), step=3)


def test_hook_deblurstack_run_start(plugin_manager, run_state):
    recorder = Recorder()
    plugin_manager.register(recorder)
    plugin_manager.hook.deblurstack_run_start(run=run_state)
    assert recorder.events == [("start", 3)]


def test_hook_deblurstack_train_step_end(plugin_manager, run_state):
    import torch

    recorder, averaged = Recorder(), {}

    class Ema:  # an EMA-style plugin that keeps its state in run.extras
        @hookimpl
        def deblurstack_train_step_end(self, run):
            run.extras.setdefault("ema_steps", 0)
            run.extras["ema_steps"] += 1
            averaged["weight"] = torch.tensor(float(run.step))

    plugin_manager.register(recorder)
    plugin_manager.register(Ema())
    plugin_manager.hook.deblurstack_train_step_end(run=run_state, logs={"loss": 0.5})
    assert recorder.events == [("step", 3, {"loss": 0.5})]
    assert run_state.extras["ema_steps"] == 1 and averaged["weight"].item() == 3.0


def test_hook_deblurstack_validation_end(plugin_manager, run_state):
    import torch

    from deblurstack import Sample

    recorder = Recorder()
    plugin_manager.register(recorder)
    image = torch.zeros(3, 4, 4)
    plugin_manager.hook.deblurstack_validation_end(
        run=run_state, metrics={"val/psnr": 30.0}, samples=[Sample("a", image, image, image)]
    )
    assert recorder.events == [("validation", {"val/psnr": 30.0}, ["a"])]


def test_hook_deblurstack_run_end(plugin_manager, run_state):
    recorder = Recorder()
    plugin_manager.register(recorder)
    plugin_manager.hook.deblurstack_run_end(run=run_state, status="completed")
    assert recorder.events == [("end", "completed")]


def test_an_implementation_with_an_unknown_argument_is_rejected(plugin_manager):
    import pluggy

    class Bad:
        @hookimpl
        def deblurstack_run_end(self, run, colour):
            pass

    with pytest.raises(pluggy.PluginValidationError, match="colour"):
        plugin_manager.register(Bad())


def test_the_manager_has_every_spec():
    assert set(SPECS) <= {name for name in dir(PluginManager().hook) if name.startswith("deblurstack_")}
