"""Value constraints declared in the factories' hints: `deblurstack config check` refuses nonsensical values of
every built-in component, each as one located line, and accepts the boundary values that are allowed."""

from __future__ import annotations

import copy
import dataclasses
from typing import Annotated

import cv2
import numpy as np
import pytest
import yaml
from pydantic import Field
from torch import nn
from typing_extensions import NotRequired, TypedDict

from deblurstack import BackboneRecord, LossRecord, hookimpl
from deblurstack.cli import main
from deblurstack.params import Parameter, read_signature
from tests.test_conformance import TakesWeight

#: stands for the test's data folder in the nodes below (a real folder, made by ``data_root``)
ROOT = "<root>"

FOLDERS = {"input_dir": f"{ROOT}/input", "target_dir": f"{ROOT}/target"}
#: a mask source for the splits when a prior reads masks
MASKS = {"type": "felzenszwalb"}


def base_config() -> dict:
    """A complete config that checks: a stack with a backbone and an L1 loss, two splits, two metrics."""
    return {
        "name": "value_checks",
        "stack": {"backbone": {"type": "unet.tiny"}, "losses": [{"type": "l1"}]},
        "data": {
            "train": {"type": "paired_folder", **FOLDERS, "patch_size": 16, "augment": True},
            "test": {"type": "paired_folder", **FOLDERS},
        },
        "metrics": [{"type": "psnr"}, {"type": "ssim"}],
    }


def place(config: dict, location: str, node: dict) -> None:
    """Put ``node`` at ``location``, the YAML key path of a component node."""
    if location == "stack.priors[0]":
        config["stack"]["priors"] = [node]
        for dataset in config["data"].values():  # the SAM-Deblur priors read masks in every split
            dataset.setdefault("aux", {"masks": dict(MASKS)})
    elif location == "stack.losses[1]":  # after the L1 loss
        config["stack"]["losses"].append(node)
    elif location == "metrics[2]":  # after psnr and ssim
        config["metrics"].append(node)
    elif location == "data.train.aux.masks":
        config["data"]["train"]["aux"] = {"masks": node}
    else:
        section, key = location.rsplit(".", 1)
        parent = config
        for part in section.split("."):
            parent = parent[part]
        parent[key] = node


def rooted(value, root):
    """``value`` with ROOT replaced by the data folder in every string."""
    if isinstance(value, dict):
        return {k: rooted(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [rooted(v, root) for v in value]
    return value.replace(ROOT, str(root)) if isinstance(value, str) else value


@pytest.fixture
def data_root(tmp_path):
    """Real data: input/ and target/ with two tiny PNGs each, list files, and the benchmark root folders."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for folder in ("input", "target", "mask"):
        (root / folder).mkdir(parents=True)
        for name in ("a", "b"):
            cv2.imwrite(str(root / folder / f"{name}.png"), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    (root / "list.txt").write_text("input/a.png target/a.png\ninput/b.png target/b.png\n")
    (root / "realblur_list.txt").write_text("target/a.png input/a.png\n")  # gt blur, as RealBlur's lists
    (root / "grouped_masks").mkdir()
    for layout in ("GOPRO_Large/train", "REDS/train_sharp", "ReLoBlur/dataset/train"):
        (root / layout).mkdir(parents=True)
    return root


def write_config(tmp_path, root, config: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(rooted(config, root), sort_keys=False))
    return path


def check(path, capsys) -> tuple[int, list[str], str]:
    code = main(["config", "check", str(path)])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


# Each case: the node's location, the node, the bad key, its bad value, words of the problem, other nodes to set.
MIMO = {"stack.backbone": {"type": "mimo_unet", "num_res": 1, "base_channel": 8}}
BAD = {
    # backbones
    "unet width below its minimum": ("stack.backbone", {"type": "unet"}, "width", -3, "greater than or equal to 2"),
    "unet depth 0": ("stack.backbone", {"type": "unet.tiny"}, "depth", 0, "greater than or equal to 1"),
    "unet depth that pads to 2**11": ("stack.backbone", {"type": "unet.small"}, "depth", 11, "less than or equal"),
    "unet of absurd width": ("stack.backbone", {"type": "unet"}, "width", 100_000, "less than or equal to 4096"),
    "nafnet width 0": ("stack.backbone", {"type": "nafnet"}, "width", 0, "greater than or equal to 1"),
    "nafnet negative block count": (
        "stack.backbone",
        {"type": "nafnet", "dec_blk_nums": [1, 1]},
        "enc_blk_nums",
        [1, -1],
        "enc_blk_nums.1: input should be greater than or equal to 0 (got -1)",  # the item's own key path
    ),
    "nafnet of nine levels": ("stack.backbone", {"type": "nafnet"}, "dec_blk_nums", [1] * 9, "at most 8"),
    "nafnet dropout of 1": ("stack.backbone", {"type": "nafnet.w32"}, "drop_out_rate", 1.0, "less than 1"),
    "baseline dw_expand 0": ("stack.backbone", {"type": "nafnet_baseline"}, "dw_expand", 0, "greater than or equal"),
    "restormer dim 0": ("stack.backbone", {"type": "restormer"}, "dim", 0, "greater than or equal to 1"),
    "restormer zero heads": (
        "stack.backbone",
        {"type": "restormer"},
        "heads",
        [1, 2, 0, 8],
        "heads.2: input should be greater than or equal to 1 (got 0)",
    ),
    "restormer ffn expansion 0": (
        "stack.backbone",
        {"type": "restormer.motion"},
        "ffn_expansion_factor",
        0.0,
        "greater than 0",
    ),
    "mimo_unet negative num_res": ("stack.backbone", {"type": "mimo_unet"}, "num_res", -1, "greater than or equal"),
    "mimo_unet dropout over 1": ("stack.backbone", {"type": "mimo_unet.plus"}, "dropout", 1.5, "less than 1"),
    "timm_unet decoder width 0": ("stack.backbone", {"type": "timm_unet"}, "decoder_width", 0, "greater than"),
    "timm_unet weights that do not exist": (
        "stack.backbone",
        {"type": "timm_unet"},
        "encoder_weights",
        f"{ROOT}/resnet18.pth",
        "no such file",
    ),
    # priors
    "sam_map without channels": ("stack.priors[0]", {"type": "sam_map"}, "seg_channels", 0, "greater than or equal"),
    "sam_map dropout below 0": ("stack.priors[0]", {"type": "sam_map"}, "dropout", -0.1, "greater than or equal"),
    "sam_map dropout over 1": ("stack.priors[0]", {"type": "sam_map.dropout"}, "dropout", 1.5, "less than or equal"),
    "sam_cat scale 0": ("stack.priors[0]", {"type": "sam_cat"}, "scale", 0.0, "greater than 0"),
    "sam_cat infinite scale": ("stack.priors[0]", {"type": "sam_cat"}, "scale", float("inf"), "finite"),
    # losses
    "charbonnier eps 0": ("stack.losses[1]", {"type": "charbonnier"}, "eps", 0.0, "greater than 0"),
    "charbonnier eps nan": ("stack.losses[1]", {"type": "charbonnier"}, "eps", float("nan"), "finite"),
    "mimo_unet loss negative fft weight": (
        "stack.losses[1]",
        {"type": "mimo_unet"},
        "fft_weight",
        -0.1,
        "greater than or equal to 0",
        MIMO,
    ),
    # metrics
    "psnr negative crop_border": ("metrics[2]", {"type": "psnr"}, "crop_border", -1, "greater than or equal to 0"),
    "ssim negative crop_border": ("metrics[2]", {"type": "ssim"}, "crop_border", -4, "greater than or equal to 0"),
    "ssim unknown variant": ("metrics[2]", {"type": "ssim"}, "variant", "gaussian2d", "'gaussian' or 'gaussian3d'"),
    "mcr negative threshold": ("metrics[2]", {"type": "mcr"}, "threshold", -3.0, "greater than or equal to 0"),
    "lpips unknown net": ("metrics[2]", {"type": "lpips"}, "net", "resnet", "'alex', 'vgg' or 'squeeze'"),
    "lpips weights that do not exist": (
        "metrics[2]",
        {"type": "lpips"},
        "backbone_weights",
        f"{ROOT}/alexnet.pth",
        "no such file",
    ),
    # datasets
    "missing input folder": ("data.train", {"type": "paired_folder", **FOLDERS}, "input_dir", f"{ROOT}/x", "no such"),
    "missing target folder": ("data.train", {"type": "paired_folder", **FOLDERS}, "target_dir", "nowhere", "no such"),
    "patch size 0": ("data.train", {"type": "paired_folder", **FOLDERS}, "patch_size", 0, "greater than or equal"),
    "patch size of 10000": (
        "data.train",
        {"type": "paired_folder", **FOLDERS},
        "patch_size",
        10_000,
        "less than or equal to 8192",
    ),
    "missing mask folder": (
        "data.train",
        {"type": "local_blur_folder", **FOLDERS},
        "mask_dir",
        f"{ROOT}/masks",
        "no such folder",
    ),
    "missing list file": ("data.train", {"type": "paired_list"}, "list_file", f"{ROOT}/nope.txt", "no such file"),
    "missing list root": (
        "data.train",
        {"type": "paired_list", "list_file": f"{ROOT}/list.txt"},
        "root",
        f"{ROOT}/elsewhere",
        "no such folder",
    ),
    "missing GoPro root": (
        "data.train",
        {"type": "gopro", "split": "train", "blur": "blur"},
        "root",
        f"{ROOT}/GOPRO",
        "no such folder",
    ),
    "missing REDS root": ("data.train", {"type": "reds", "split": "train"}, "root", f"{ROOT}/R", "no such folder"),
    "missing RealBlur root": (
        "data.train",
        {"type": "realblur", "list_file": f"{ROOT}/realblur_list.txt"},
        "root",
        f"{ROOT}/RealBlur",
        "no such folder",
    ),
    "missing ReLoBlur root": ("data.train", {"type": "reloblur", "split": "test"}, "root", "ReLo", "no such folder"),
    # mask sources
    "felzenszwalb scale 0": ("data.train.aux.masks", {"type": "felzenszwalb"}, "scale", 0.0, "greater than 0"),
    "felzenszwalb negative min_size": (
        "data.train.aux.masks",
        {"type": "felzenszwalb"},
        "min_size",
        -1,
        "greater than or equal to 0",
    ),
    "slic without segments": ("data.train.aux.masks", {"type": "slic"}, "n_segments", 0, "greater than or equal"),
    "slic negative sigma": ("data.train.aux.masks", {"type": "slic"}, "sigma", -1.0, "greater than or equal to 0"),
    "sam without points": (
        "data.train.aux.masks",
        {"type": "sam", "checkpoint": "sam_vit_h.pth"},
        "points_per_side",
        0,
        "greater than or equal to 1",
    ),
    "sam IoU threshold over 1": (
        "data.train.aux.masks",
        {"type": "sam.sam_deblur", "checkpoint": "sam_vit_h.pth"},
        "pred_iou_thresh",
        1.5,
        "less than or equal to 1",
    ),
    "sam nine crop layers": (
        "data.train.aux.masks",
        {"type": "sam", "checkpoint": "sam_vit_h.pth"},
        "crop_n_layers",
        9,
        "less than or equal to 4",
    ),
    "sam device torch does not know": (
        "data.train.aux.masks",
        {"type": "sam", "checkpoint": "sam_vit_h.pth"},
        "device",
        "gpu",
        "not a torch device",
    ),
    "mask files in a missing folder": (
        "data.train.aux.masks",
        {"type": "mask_files"},
        "folder",
        f"{ROOT}/grouped",
        "no such folder",
    ),
}


def test_there_are_at_least_30_bad_values_from_every_kind_of_component():
    assert len(BAD) >= 30
    locations = {case[0] for case in BAD.values()}
    assert {"stack.backbone", "stack.priors[0]", "stack.losses[1]", "metrics[2]"} <= locations
    assert {"data.train", "data.train.aux.masks"} <= locations


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_value_is_one_line_naming_the_file_and_its_key(tmp_path, data_root, capsys, case):
    location, node, key, value, words, *also = BAD[case]
    config = base_config()
    for where, other in (also[0] if also else {}).items():
        place(config, where, copy.deepcopy(other))
    place(config, location, {**copy.deepcopy(node), key: value})
    path = write_config(tmp_path, data_root, config)
    code, lines, out = check(path, capsys)
    assert code == 2 and out == ""
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"deblurstack: error: {path}: {location}.{key}"), line
    assert line[len(f"deblurstack: error: {path}: {location}.{key}") :][0] in ":.", line  # .N: an item of a list
    assert words in line, line


def test_the_config_around_the_bad_values_checks(tmp_path, data_root, capsys):
    code, lines, _ = check(write_config(tmp_path, data_root, base_config()), capsys)
    assert code == 0 and lines == []


# The boundary values that are allowed, of every constrained parameter the cases above refuse a value of.
EDGE_BACKBONES = {
    "unet": {"type": "unet", "width": 2, "depth": 10, "out_channels": 1, "output": "sigmoid"},
    "unet_top": {"type": "unet", "width": 4096, "depth": 1},
    "nafnet": {
        "type": "nafnet",
        "width": 1,
        "middle_blk_num": 0,
        "enc_blk_nums": [0, 256, 0, 0, 0, 0, 0, 0],
        "dec_blk_nums": [256, 0, 0, 0, 0, 0, 0, 0],
        "dw_expand": 16,
        "ffn_expand": 1,
        "drop_out_rate": 0.0,
    },
    "nafnet_baseline": {"type": "nafnet_baseline", "width": 4096, "dw_expand": 1, "drop_out_rate": 0.999},
    "restormer": {
        "type": "restormer",
        "dim": 1,
        "num_blocks": [0, 0, 0, 256],
        "num_refinement_blocks": 0,
        "heads": [1, 1, 1, 1],
        "ffn_expansion_factor": 64.0,
    },
    "mimo_unet": {"type": "mimo_unet", "num_res": 0, "base_channel": 3, "dropout": 0.0},  # 2 * 3 > 5 inputs
    "timm_unet": {"type": "timm_unet", "decoder_width": 256},
}


def edge_config() -> dict:
    """Every prior, loss, metric, dataset and mask source, with allowed boundary values."""
    masks = {"type": "felzenszwalb", "scale": 1e-9, "sigma": 0.0, "min_size": 0}
    sam = {
        "type": "sam",
        "checkpoint": "sam_vit_h.pth",  # needed only when a map is computed, not to check or build the source
        "points_per_side": 1,
        "points_per_batch": 1024,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 1.0,
        "stability_score_offset": 0.0,
        "box_nms_thresh": 1.0,
        "crop_n_layers": 4,
        "crop_nms_thresh": 0.0,
        "crop_overlap_ratio": 0.0,
        "crop_n_points_downscale_factor": 1,
        "min_mask_region_area": 0,
        "device": "cuda:1",  # a device torch can name; whether it exists matters only when SAM runs
    }
    return {
        "stack": {
            "priors": [{"type": "sam_map", "seg_channels": 1, "dropout": 1.0}, {"type": "sam_cat", "scale": 1e-300}],
            "backbone": {"type": "unet.tiny"},
            "losses": [{"type": "l1"}, {"type": "charbonnier", "eps": 5e-324}, {"type": "psnr", "to_y": True}],
        },
        "data": {
            "train": {"type": "paired_folder", **FOLDERS, "patch_size": 1, "aux": {"masks": masks}},
            "test": {"type": "paired_folder", **FOLDERS, "patch_size": 8192, "aux": {"masks": sam}},
            "slic": {"type": "paired_folder", **FOLDERS, "aux": {"masks": {"type": "slic", "n_segments": 1}}},
            "files": {
                "type": "paired_list",
                "list_file": f"{ROOT}/list.txt",
                "root": ROOT,
                "aux": {"masks": {"type": "mask_files", "folder": f"{ROOT}/grouped_masks", "format": "npz"}},
            },
            "local": {"type": "local_blur_folder", **FOLDERS, "mask_dir": f"{ROOT}/mask", "aux": {"masks": masks}},
            "gopro": {
                "type": "gopro",
                "root": f"{ROOT}/GOPRO_Large",
                "split": "train",
                "blur": "blur",
                "aux": {"masks": masks},
            },
            "reds": {"type": "reds", "root": f"{ROOT}/REDS", "split": "train", "aux": {"masks": masks}},
            "realblur": {
                "type": "realblur",
                "list_file": f"{ROOT}/realblur_list.txt",
                "root": ROOT,
                "aux": {"masks": masks},
            },
            "reloblur": {"type": "reloblur", "root": f"{ROOT}/ReLoBlur", "split": "train", "aux": {"masks": masks}},
        },
        "metrics": [
            {"type": "psnr", "crop_border": 0},
            {"type": "ssim", "variant": "gaussian3d", "crop_border": 0},
            {"type": "mcr", "threshold": 0.0},
            {"type": "lpips", "net": "squeeze", "pretrained_backbone": False},
        ],
    }


@pytest.mark.parametrize("backbone", list(EDGE_BACKBONES))
def test_the_boundary_values_that_are_allowed_pass(tmp_path, data_root, capsys, backbone):
    config = edge_config()
    config["stack"]["backbone"] = EDGE_BACKBONES[backbone]
    if backbone == "mimo_unet":
        config["stack"]["losses"].append({"type": "mimo_unet", "fft_weight": 0.0})
    code, lines, out = check(write_config(tmp_path, data_root, config), capsys)
    assert lines == [] and code == 0
    assert "seg_channels: 1" in out and "patch_size: 8192" in out and "crop_n_layers: 4" in out


# ------------------------------------------------------------------------------------ synthesizers


@pytest.mark.parametrize(
    "synthesizer, setting, words",
    [
        ("motion_blur", "kernel_size=30", "must be odd, got 30"),
        ("motion_blur", "kernel_size=0", "greater than or equal to 1"),
        ("motion_blur", "kernel_size=2049", "less than or equal to 1023"),
        ("motion_blur", "max_length=0.0", "greater than 0"),
        ("motion_blur", "iterations=1", "greater than or equal to 2"),
        ("motion_blur", "exposure=0.0", "greater than 0"),
        ("motion_blur", "exposure=1.5", "less than or equal to 1"),
        ("motion_blur", "anxiety=-0.01", "greater than or equal to 0"),
        ("motion_blur", "gamma=0.0", "greater than 0"),
        ("motion_blur", "noise_sigma=-0.1", "greater than or equal to 0"),
        ("frame_average", "frames=6", "must be odd, got 6"),
        ("frame_average", "frames=0", "greater than or equal to 1"),
        ("frame_average", "frames=257", "less than or equal to 255"),
        ("frame_average", "gamma=.inf", "finite"),
    ],
)
def test_a_bad_synthesizer_setting_is_one_line_naming_it(tmp_path, capsys, synthesizer, setting, words):
    command = ["synth", str(tmp_path), str(tmp_path / "out"), "--type", synthesizer, "--set", setting]
    assert main(command) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    key = setting.split("=")[0]
    assert lines[0].startswith("deblurstack: error: ") and f"--type / --set.{key}: " in lines[0], lines[0]
    assert words in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # refused before anything is made


def test_the_synthesizers_boundary_values_pass():
    from deblurstack.compose import resolve_node

    motion = {"kernel_size": 1, "max_length": 1e-9, "iterations": 2, "exposure": 1.0, "anxiety": 0.0, "noise_sigma": 0}
    assert resolve_node("synthesizer", {"type": "motion_blur", **motion}).params["kernel_size"] == 1
    assert resolve_node("synthesizer", {"type": "motion_blur", "kernel_size": 1023}).params["kernel_size"] == 1023
    for frames in (1, 255):
        assert resolve_node("synthesizer", {"type": "frame_average", "frames": frames}).params["frames"] == frames


# ------------------------------------------------------------------------------------ third-party components


class ThirdPartyNet(nn.Module):
    """A backbone of another package.

    Args:
        in_channels: image channels plus prior channels (set by the stack builder).
        width: hidden channels.
    """

    def __init__(self, in_channels: int = 3, width: Annotated[int, Field(ge=1)] = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, image):
        return image[:, :3] + self.body(image)


def third_party_net(in_channels: int = 3, width: Annotated[int, Field(ge=1)] = 8) -> nn.Module:
    """The same backbone, made by a function.

    Args:
        in_channels: image channels plus prior channels (set by the stack builder).
        width: hidden channels.
    """
    return ThirdPartyNet(in_channels, width)


class ThirdPartyPlugin:
    @hookimpl
    def deblurstack_backbones(self):
        return [
            BackboneRecord(name="third_party_net", factory=third_party_net, summary="A function's backbone"),
            BackboneRecord(name="third_party_class", factory=ThirdPartyNet, summary="A class's backbone"),
        ]


@pytest.mark.parametrize("name", ["third_party_net", "third_party_class"])
def test_a_third_party_backbone_declares_its_constraint_once(tmp_path, data_root, capsys, register_plugin, name):
    register_plugin(ThirdPartyPlugin(), name="third_party")
    config = base_config()
    config["stack"]["backbone"] = {"type": name, "width": -3}
    path = write_config(tmp_path, data_root, config)
    code, lines, _ = check(path, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (
        f"deblurstack: error: {path}: stack.backbone.width: input should be greater than or equal to 1 "
        "(expected int >= 1, got -3)"
    )
    config["stack"]["backbone"]["width"] = 1
    code, lines, out = check(write_config(tmp_path, data_root, config), capsys)
    assert code == 0 and lines == [] and "width: 1" in out


class ShadowingPlugin:
    @hookimpl
    def deblurstack_losses(self):
        return [LossRecord(name="weighted_l1", factory=TakesWeight, summary="An L1 loss with its own weight")]


def test_a_factory_parameter_named_like_a_reserved_option_is_refused_naming_the_plugin(
    tmp_path, data_root, capsys, register_plugin
):
    """The builder takes ``weight`` from a loss node as the term's factor: the factory's own ``weight`` would keep
    its default whatever the YAML says, so the config check refuses the component instead."""
    register_plugin(ShadowingPlugin(), name="shadowing")
    config = base_config()
    config["stack"]["losses"] = [{"type": "weighted_l1", "weight": 0.5}]
    path = write_config(tmp_path, data_root, config)
    code, lines, _ = check(path, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        f"deblurstack: error: {path}: stack.losses[0].type: loss 'weighted_l1' (plugin 'shadowing'"
    )
    assert lines[0].endswith(
        "its factory's parameter weight is named like a reserved option of loss nodes, which the builder applies "
        "itself, so it would never receive a value: the plugin must rename it"
    )


class _Options(TypedDict):
    betas: tuple[float, float]
    names: list[str]
    pairs: NotRequired[list[tuple[int, int]]]


@pytest.mark.parametrize(
    ("hint", "value", "expected"),
    [
        (list[tuple[int, int]], [[1, 2], [3, 4]], [(1, 2), (3, 4)]),
        (_Options, {"betas": [0.9, 0.99], "names": ["a"]}, {"betas": (0.9, 0.99), "names": ["a"]}),
        (
            _Options,
            {"betas": [0.9, 0.99], "names": [], "pairs": [[1, 2]]},
            {"betas": (0.9, 0.99), "names": [], "pairs": [(1, 2)]},
        ),
        (dict[str, tuple[int, ...]] | None, {"a": [1, 2, 3]}, {"a": (1, 2, 3)}),
        (tuple[int, int] | tuple[tuple[int, int], ...], [[1, 2], [3, 4]], ((1, 2), (3, 4))),  # the second member
    ],
)
def test_yaml_lists_become_tuples_only_where_the_hint_says_tuple(hint, value, expected):
    # YAML has no tuples; a hint that mixes lists and tuples used to refuse every value read from YAML
    checked, problem, _ = Parameter("x", hint).check(value)
    assert problem is None and checked == expected  # (a tuple never equals a list)


@dataclasses.dataclass(kw_only=True)
class _MadeDefaults:
    sizes: dict[str, int] = dataclasses.field(default_factory=lambda: {"a": 1})
    steps: int = 2


def test_a_dataclass_default_factory_gives_its_value_not_a_placeholder():
    """Made by a factory, a dataclass field's default reads as ``<factory>`` in the signature; a run's config.yaml
    wrote that string (the kernel_wizard trainer's ``network``)."""
    parameters = read_signature(_MadeDefaults).parameters
    assert parameters["sizes"].default == {"a": 1} and parameters["steps"].default == 2
