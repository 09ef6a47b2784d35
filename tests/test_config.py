"""Configuration loading and checking: bases, overrides, interpolation, and malformed configs."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from deblurstack import ConfigError, load_config, resolve_config
from deblurstack.cli import main

pytestmark = pytest.mark.usefixtures("test_components")


def write(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path / next(iter(files))


def check(path, *overrides):
    return main(["config", "check", str(path), *overrides])


# Each case: files (the first is checked), overrides, and the one line it must print.
BAD = {
    "unknown backbone": (
        {"c.yaml": "stack: {backbone: {type: unte}}"},
        [],
        r"c.yaml: stack.backbone.type: unknown backbone 'unte'; did you mean 'unet'\? "
        r"\(choose from: [a-z_, ]*needs_depth, [a-z_, ]*unet\)",
    ),
    "unknown preset": (
        {"c.yaml": "stack: {backbone: {type: unet.smal}}"},
        [],
        r"stack.backbone.type: unknown preset 'smal' of backbone 'unet'; did you mean 'small'\? "
        r"\(presets: bladenet, small, tiny\)",
    ),
    "misspelled parameter": (
        {"c.yaml": "stack: {backbone: {type: unet, widht: 16}}"},
        [],
        r"stack.backbone.widht: unknown parameter of backbone 'unet'; did you mean 'width'\?",
    ),
    "wrong type": (
        {"c.yaml": "stack: {backbone: {type: unet, width: sixteen}}"},
        [],
        r"stack.backbone.width: input should be a valid integer \(expected int in \[2, 4096\], got 'sixteen'\)",
    ),
    "string where a number is due": (
        {"c.yaml": "stack: {backbone: {type: unet, width: '16'}}"},
        [],
        r"stack.backbone.width: input should be a valid integer \(expected int in \[2, 4096\], got '16'\)",
    ),
    "value outside a Literal": (
        {"c.yaml": "stack: {backbone: {type: unet, output: tanh}}"},
        [],
        r"stack.backbone.output: input should be 'residual', 'sigmoid' or 'linear'",
    ),
    "missing required parameter": (
        {"c.yaml": "stack: {backbone: {type: needs_depth}}"},
        [],
        r"stack.backbone.depth: missing required parameter of backbone 'needs_depth'",
    ),
    "missing ??? value": (
        {"c.yaml": "stack:\n  backbone:\n    type: unet\n    width: ???\n"},
        [],
        r"c.yaml: stack.backbone.width: missing required value \(\?\?\?\)",
    ),
    "prior channels the backbone cannot take": (
        {"c.yaml": "stack: {priors: [{type: label_mean}], backbone: {type: plain}}"},
        [],
        r"stack.priors: backbone 'plain' takes no extra input channels, but stack.priors\[0\] \(label_mean\) adds 2",
    ),
    "in_channels that contradicts the priors": (
        {"c.yaml": "stack: {priors: [{type: label_mean, channels: 3}], backbone: {type: unet, in_channels: 5}}"},
        [],
        r"stack.backbone.in_channels: is 5, but image 3 \+ label_mean 3 = 6; leave it out and the builder sets it",
    ),
    "prior input no dataset provides": (
        {
            "c.yaml": """
            stack: {priors: [{type: label_mean}], backbone: {type: unet.tiny}}
            data: {train: {type: pairs, root: data/train}}
        """
        },
        [],
        r"data.train: prior 'label_mean' \(stack.priors\[0\]\) needs input 'masks', which dataset 'pairs' does not "
        r"provide; add data.train.aux.masks with a mask source \(blocks, counting_blocks[a-z_, ]*\)",
    ),
    "mask source under the wrong input name": (
        {
            "c.yaml": """
            stack: {backbone: {type: unet.tiny}}
            data: {train: {type: pairs, root: d, aux: {edges: {type: blocks}}}}
        """
        },
        [],
        r"data.train.aux.edges: mask source 'blocks' provides masks, not 'edges'",
    ),
    "aux on a dataset that cannot take it": (
        {
            "c.yaml": "stack: {backbone: {type: unet}}\n"
            "data: {val: {type: local_pairs, root: d, aux: {masks: {type: blocks}}}}"
        },
        [],
        r"data.val.aux: dataset 'local_pairs' takes no auxiliary inputs \(its factory has no aux_sources parameter\)",
    ),
    "aux that is not a mapping": (
        {"c.yaml": "stack: {backbone: {type: unet}}\ndata: {train: {type: pairs, root: d, aux: [blocks]}}"},
        [],
        r"data.train.aux: must map input names \(e.g. masks\) to mask sources, got \['blocks'\]",
    ),
    "YAML syntax error": (
        {"c.yaml": "stack:\n  backbone: {type: unet\n  losses: []\n"},
        [],
        r"c.yaml:3: invalid YAML: did not find expected ',' or '}'",
    ),
    "duplicate YAML key": (
        {"c.yaml": "stack:\n  backbone: {type: unet}\n  backbone: {type: plain}\n"},
        [],
        r"c.yaml:3: invalid YAML: found duplicate key backbone",
    ),
    "python object tag refused": (
        {"c.yaml": "stack: !!python/object/apply:os.system ['echo hi']\n"},
        [],
        r"c.yaml:1: invalid YAML: could not determine a constructor for the tag",
    ),
    "top level not a mapping": (
        {"c.yaml": "- stack\n- data\n"},
        [],
        r"c.yaml: the top level must be a mapping of sections",
    ),
    "base file not found": (
        {"c.yaml": "base: missing.yaml\nstack: {backbone: {type: unet}}"},
        [],
        r"c.yaml: base: config file not found: .*missing.yaml",
    ),
    "cyclic base": (
        {"a.yaml": "base: b.yaml", "b.yaml": "base: a.yaml\nstack: {backbone: {type: unet}}"},
        [],
        r"b.yaml: base: cyclic base files: .*a.yaml -> .*b.yaml -> .*a.yaml",
    ),
    "base that is not a path": (
        {"c.yaml": "base: {file: x}\nstack: {backbone: {type: unet}}"},
        [],
        r"c.yaml: base: must be a file path or a list of file paths",
    ),
    "override of a key that does not exist": (
        {"c.yaml": "stack: {backbone: {type: unet}}"},
        ["stak.backbone.width=16"],
        r"override 'stak.backbone.width=16': 'stak' does not exist in .*c.yaml",
    ),
    "override of an unknown parameter": (
        {"c.yaml": "stack: {backbone: {type: unet}}"},
        ["stack.backbone.widht=16"],
        r"stack.backbone.widht: unknown parameter of backbone 'unet'; did you mean 'width'\?",
    ),
    "override without a value": (
        {"c.yaml": "stack: {backbone: {type: unet}}"},
        ["stack.backbone.width"],
        r"override 'stack.backbone.width': expected key.path=value",
    ),
    "interpolation of a missing key": (
        {"c.yaml": "stack: {backbone: {type: unet, width: '${sizes.width}'}}"},
        [],
        r"c.yaml: stack.backbone.width: Interpolation key 'sizes.width' not found",
    ),
    "unknown section": (
        {"c.yaml": "stack: {backbone: {type: unet}}\ntrian: {type: x}"},
        [],
        r"c.yaml: trian: unknown section; did you mean 'train'\?",
    ),
    "unknown stack key": (
        {"c.yaml": "stack: {backbone: {type: unet}, prior: [{type: label_mean}]}"},
        [],
        r"stack.prior: unknown key; did you mean 'priors'\?",
    ),
    "missing backbone": (
        {"c.yaml": "stack: {losses: [{type: l1}]}"},
        [],
        r"stack.backbone: missing: every stack needs a backbone \(backbones: [a-z_, ]*needs_depth, [a-z_, ]*unet\)",
    ),
    "missing stack": (
        {"c.yaml": "name: nothing"},
        [],
        r"c.yaml: stack: missing: a config needs a stack with at least a backbone",
    ),
    "node without a type": (
        {"c.yaml": "stack: {backbone: {width: 16}}"},
        [],
        r"stack.backbone.type: missing: name a backbone \(choices: [a-z_, ]*needs_depth, [a-z_, ]*unet\)",
    ),
    "node that is not a mapping": (
        {"c.yaml": "stack: {backbone: unet}"},
        [],
        r"stack.backbone: must be a mapping like \{type: <backbone>\}, got 'unet'",
    ),
    "priors that are not a list": (
        {"c.yaml": "stack: {backbone: {type: unet}, priors: {type: label_mean}}"},
        [],
        r"stack.priors: must be a list of prior nodes",
    ),
    "loss weight that is not a number": (
        {"c.yaml": "stack: {backbone: {type: unet}, losses: [{type: l1, weight: heavy}]}"},
        [],
        r"stack.losses\[0\].weight: must be a finite number, got 'heavy'",
    ),
    "multiscale loss on a single-scale backbone": (
        {"c.yaml": "stack: {backbone: {type: unet}, losses: [{type: multiscale_l1}]}"},
        [],
        r"stack.losses\[0\]: loss 'multiscale_l1' trains every output scale, but backbone 'unet' returns one image",
    ),
    "loss weight that is not finite": (
        {"c.yaml": "stack: {backbone: {type: unet}, losses: [{type: l1, weight: .nan}]}"},
        [],
        r"stack.losses\[0\].weight: must be a finite number, got nan",
    ),
    "empty preset": (
        {"c.yaml": "stack: {backbone: {type: unet.}}"},
        [],
        r"stack.backbone.type: unknown preset '' of backbone 'unet' \(presets: bladenet, small, tiny\)",
    ),
    "loss input the training data lacks": (
        {
            "c.yaml": """
            stack: {priors: [{type: spatial_gate}], backbone: {type: unet.tiny}}
            data: {train: {type: pairs, root: t}, val: {type: pairs, root: v}}
        """
        },
        [],
        r"data.train: prior 'spatial_gate' \(stack.priors\[0\]\) needs input 'blur_mask', which dataset 'pairs' "
        r"does not provide",
    ),
    "parameter of a module without its own __init__": (
        {"c.yaml": "stack: {backbone: {type: unet}, losses: [{type: l1, eps: 0.1}]}"},
        [],
        r"stack.losses\[0\].eps: unknown parameter of loss 'l1' \(parameters: none\)",
    ),
    "frozen that is not a boolean": (
        {"c.yaml": "stack: {backbone: {type: unet, frozen: maybe}}"},
        [],
        r"stack.backbone.frozen: must be true or false, got 'maybe'",
    ),
    "checkpoint in the wrong form": (
        {"c.yaml": "stack: {backbone: {type: unet, checkpoint: {file: w.pth}}}"},
        [],
        r"stack.backbone.checkpoint: must be a file path or \{path, key, strict\}",
    ),
    "checkpoint that does not exist": (
        {"c.yaml": "stack: {backbone: {type: unet, checkpoint: /nowhere/w.pth}}"},
        [],
        r"stack.backbone.checkpoint: no such file: /nowhere/w.pth",
    ),
    "guidance prior without insertion points": (
        {"c.yaml": "stack: {priors: [{type: spatial_gate}], backbone: {type: plain}}"},
        [],
        r"stack.priors\[0\]: prior 'spatial_gate' guides backbone features, "
        r"but backbone 'plain' has no insertion points",
    ),
    "insertion points set by hand": (
        {"c.yaml": "stack: {priors: [{type: spatial_gate, insertion_points: {a: 1}}], backbone: {type: unet}}"},
        [],
        r"stack.priors\[0\].insertion_points: is set by the builder from the backbone; leave it out",
    ),
    "seed that is not an integer": (
        {"c.yaml": "seed: 1.5\nstack: {backbone: {type: unet}}"},
        [],
        r"c.yaml: seed: must be an integer, got 1.5",
    ),
    "unknown metric": (
        {"c.yaml": "stack: {backbone: {type: unet}}\nmetrics: [{type: mea}]"},
        [],
        r"metrics\[0\].type: unknown metric 'mea'; did you mean 'mae'\?",
    ),
    "misspelled trainer": (
        {"c.yaml": "stack: {backbone: {type: unet}}\ntrain: {type: supervise}"},
        [],
        r"train.type: unknown trainer 'supervise'; did you mean 'supervised'\? "
        r"\(choose from: adversarial, kernel_wizard, phased, supervised\)",
    ),
    "trainer without its required parameter": (
        {"c.yaml": "stack: {backbone: {type: unet}, losses: [{type: l1}]}\ntrain: {type: supervised}"},
        [],
        r"train.iterations: missing required parameter of trainer 'supervised': optimizer steps in total.",
    ),
    "config file that does not exist": (
        {"c.yaml": "stack: {backbone: {type: unet}}"},
        ["@missing"],
        r"config file not found: .*nope.yaml",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_malformed_config_gives_one_located_line(tmp_path, capsys, case):
    files, overrides, expected = BAD[case]
    path = write(tmp_path, files)
    if overrides == ["@missing"]:
        path, overrides = tmp_path / "nope.yaml", []
    assert check(path, *overrides) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("deblurstack: error: ")
    assert re.search(expected, lines[0]), f"\n{lines[0]}\ndoes not match\n{expected}"
    assert captured.out == ""


def test_there_are_at_least_25_malformed_configs():
    assert len(BAD) >= 25


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    path = write(tmp_path, {"c.yaml": "stack: {backbone: {type: unet, widht: 3, depth: x}, losses: [{type: l2}]}"})
    assert check(path) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert [line.split(": ")[3] for line in lines] == [
        "stack.backbone.widht",
        "stack.backbone.depth",
        "stack.losses[0].type",
    ]


def test_bases_merge_in_order_and_the_file_wins(tmp_path):
    path = write(
        tmp_path,
        {
            "child.yaml": """
            base: [common.yaml, width.yaml]
            stack:
              losses: [{type: l1}]
        """,
            "common.yaml": """
            seed: 7
            stack:
              backbone: {type: unet, width: 8, depth: 2}
              losses: [{type: psnr}, {type: charbonnier}]
        """,
            "width.yaml": "stack: {backbone: {width: 12}}",
        },
    )
    data = resolve_config(path).data
    assert data["seed"] == 7
    assert data["stack"]["backbone"]["width"] == 12 and data["stack"]["backbone"]["depth"] == 2
    assert [loss["type"] for loss in data["stack"]["losses"]] == ["l1"]  # lists are replaced, not merged


def test_overrides_parse_yaml_values_and_reach_list_items(tmp_path):
    path = write(tmp_path, {"c.yaml": "stack: {backbone: {type: unet}, losses: [{type: l1}, {type: psnr}]}"})
    config = load_config(path, ["stack.backbone.width=16", "stack.losses.1.weight=1e-2", "name=run_a"])
    data = resolve_config(config).data
    assert data["stack"]["backbone"]["width"] == 16
    assert data["stack"]["losses"][1]["weight"] == pytest.approx(0.01)
    assert data["name"] == "run_a"


def test_interpolation_resolves_before_checking(tmp_path):
    path = write(
        tmp_path,
        {
            "c.yaml": """
        sizes: {width: 24}
        stack: {backbone: {type: unet, width: '${sizes.width}'}}
    """
        },
    )
    with pytest.raises(ConfigError, match="sizes: unknown section"):
        resolve_config(path)
    path = write(
        tmp_path,
        {
            "d.yaml": """
        name: w6
        stack: {backbone: {type: unet, width: 6, depth: '${stack.backbone.width}'}}
    """
        },
    )
    assert resolve_config(path).data["stack"]["backbone"]["depth"] == 6


def test_config_check_prints_an_explicit_config_that_checks_again(tmp_path, capsys):
    path = write(
        tmp_path,
        {
            "c.yaml": """
        stack:
          priors: [{type: label_mean}]
          backbone: {type: unet.tiny}
          losses: [{type: psnr, weight: 2}]
        data:
          train: {type: pairs, root: data, aux: {masks: {type: blocks}}}
    """
        },
    )
    assert check(path) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert data["stack"]["backbone"] == {
        "type": "unet.tiny",
        "in_channels": 5,
        "out_channels": 3,
        "width": 8,
        "depth": 2,
        "output": "residual",
        "norm": "batch",
    }
    assert data["stack"]["priors"] == [{"type": "label_mean", "channels": 2}]
    assert data["data"]["train"]["aux"] == {"masks": {"type": "blocks", "block": 8}}
    again = tmp_path / "explicit.yaml"
    again.write_text(printed)
    assert check(again) == 0
    assert capsys.readouterr().out == printed


def test_python_api_reports_all_problems(tmp_path):
    path = write(tmp_path, {"c.yaml": "stack: {backbone: {type: plain}, priors: [{type: label_mean}]}"})
    with pytest.raises(ConfigError) as caught:
        resolve_config(path)
    assert caught.value.problems == [
        f"{path}: stack.priors: backbone 'plain' takes no extra input channels, but stack.priors[0] (label_mean) adds 2"
    ]


def test_variants_apply_before_overrides_and_name_the_run(tmp_path):
    path = write(
        tmp_path,
        {
            "c.yaml": """
        name: study
        stack:
          priors: []
          backbone: {type: unet.tiny}
          losses: [{type: l1}]
        variants:
          wide: {stack.backbone.width: 16}
          gated: {stack.priors: [{type: label_mean, channels: 1}], stack.losses.0: {type: psnr}}
    """
        },
    )
    plain = resolve_config(path).data
    assert plain["name"] == "study" and "variants" not in plain
    gated = load_config(path, ["stack.backbone.depth=3"], variant="gated")
    assert gated.variants == ["wide", "gated"] and gated.data["name"] == "study-gated"
    # a renamed study (name=... on the command line, one per seed) still gives each variant its own run
    renamed = load_config(path, ["name=study_s1"], variant="gated")
    assert renamed.data["name"] == "study_s1-gated"
    data = resolve_config(gated).data
    assert data["stack"]["priors"] == [{"type": "label_mean", "channels": 1}]
    assert data["stack"]["losses"] == [{"type": "psnr", "weight": 1.0, "to_y": False}]  # replaced, not merged
    assert data["stack"]["backbone"]["depth"] == 3 and data["stack"]["backbone"]["in_channels"] == 4


@pytest.mark.parametrize(
    "variants, variant, message",
    [
        (
            "{wide: {stack.backbone.width: 16}}",
            "wdie",
            r"variants: no variant 'wdie'; did you mean 'wide'\? \(variants: wide\)",
        ),
        ("{wide: {stak.backbone.width: 16}}", "wide", r"variants.wide.stak.backbone.width: 'stak' does not exist"),
        ("[wide]", "wide", r"variants: must map variant names to \{dotted.key: value\} mappings"),
    ],
)
def test_bad_variants_are_located(tmp_path, capsys, variants, variant, message):
    path = write(tmp_path, {"c.yaml": f"stack: {{backbone: {{type: unet}}}}\nvariants: {variants}\n"})
    assert main(["config", "check", str(path), "--variant", variant]) == 2
    assert re.search(message, capsys.readouterr().err)
