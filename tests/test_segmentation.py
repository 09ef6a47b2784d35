"""Mask sources of the segmentation plugin: SAM-Deblur's gray code map, SAM, classical segmentations, files."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import cv2
import numpy as np
import pytest
import torch
import yaml
from skimage import data as photos

from deblurstack import resolve_config
from deblurstack.data import Pair, dihedral, write_image
from deblurstack.masks import CachedSource, MaskError
from deblurstack.plugins.segmentation.classical import FelzenszwalbMasks, SlicMasks
from deblurstack.plugins.segmentation.files import MaskFiles
from deblurstack.plugins.segmentation.grouping import SegmentationError, encode_masks, groups_from_npz
from deblurstack.plugins.segmentation.sam import SamMasks


def photo(name: str = "astronaut", size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A real photo from scikit-image, ``height x width x 3`` float32 RGB in [0, 1]."""
    image = cv2.resize(getattr(photos, name)(), size[::-1], interpolation=cv2.INTER_AREA)
    return image.astype(np.float32) / 255


def official_gray_map(masks: list[np.ndarray]) -> np.ndarray:
    """SAM-Deblur's draw_segmask (1_create_masks_with_sam.py), one mask at a time in float32."""
    segmask = np.zeros(masks[0].shape, np.float32)
    for index, mask in enumerate(masks):
        area = (mask > 0).astype(np.float32)
        segmask += area * (2 * (index + 1) if index < 127 else 2 * (255 - index) - 1)
    return np.clip(segmask, 0, 255).astype(np.uint8)


def official_groups(gray: np.ndarray) -> np.ndarray:
    """SAM-Deblur's grouped masks (2_masks_to_grouped_masks.py): one bool level set per value, M x 1 x H x W."""
    return np.stack([(gray == value)[None] for value in np.unique(gray)])


# ---------------------------------------------------------------- the gray code map


@pytest.mark.parametrize("count", [1, 7, 126, 127, 128, 200, 255])
def test_encode_masks_equals_the_official_loop_with_overlaps_and_clipping(count):
    rng = np.random.default_rng(count)
    masks = [rng.random((20, 30)) < rng.uniform(0.05, 0.5) for _ in range(count)]
    encoded = encode_masks(masks)
    assert encoded.dtype == np.uint8 and encoded.shape == (20, 30)
    assert np.array_equal(encoded, official_gray_map(masks))
    if count >= 20:
        assert (encoded == 255).any()  # overlapping masks sum past 255 and are clipped


def test_each_mask_gets_its_code_even_past_mask_127():
    masks = [np.zeros((1, 255), bool) for _ in range(255)]
    for index, mask in enumerate(masks):
        mask[0, index] = True  # disjoint single pixels: the map shows each code
    expected = [2 * (i + 1) for i in range(127)] + [2 * (255 - i) - 1 for i in range(127, 255)]
    assert expected[126:129] == [254, 255, 253] and expected[-1] == 1
    assert encode_masks(masks)[0].tolist() == expected


def test_no_masks_give_an_empty_map_and_too_many_masks_an_error():
    assert not encode_masks([], shape=(4, 5)).any()
    with pytest.raises(SegmentationError, match=r"^256 masks: SAM-Deblur's gray code map holds at most 255"):
        encode_masks([np.ones((2, 2), bool)] * 256)


def test_grouped_npz_files_give_one_label_per_level_set(tmp_path):
    gray = official_gray_map([np.random.default_rng(i).random((12, 16)) < 0.4 for i in range(5)])
    np.savez_compressed(tmp_path / "a.npz", masks=official_groups(gray))
    labels = groups_from_npz(tmp_path / "a.npz")
    assert labels.dtype == np.uint8 and np.array_equal(np.unique(gray)[labels], gray)

    np.savez_compressed(tmp_path / "holes.npz", masks=official_groups(gray)[1:])  # one group missing
    with pytest.raises(SegmentationError, match=r"holes.npz: the \d+ groups do not partition the image"):
        groups_from_npz(tmp_path / "holes.npz")
    np.savez_compressed(tmp_path / "other.npz", labels=gray)
    with pytest.raises(SegmentationError, match=r"other.npz: no array 'masks'"):
        groups_from_npz(tmp_path / "other.npz")


# ---------------------------------------------------------------- SAM


@pytest.fixture(scope="module")
def tiny_sam():
    """A randomly initialised SAM from segment_anything's own modules: 64 px input, width 32, depth 1.

    One torch thread while it is in use: the generator's many tiny tensor operations slow down
    30-fold when two threads compete with other processes for two cores.
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    width = 32
    yield Sam(
        image_encoder=ImageEncoderViT(
            img_size=64,
            patch_size=16,
            embed_dim=width,
            depth=1,
            num_heads=2,
            out_chans=width,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=width, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=width,
            transformer=TwoWayTransformer(depth=1, embedding_dim=width, mlp_dim=64, num_heads=2),
            iou_head_hidden_dim=32,
        ),
    ).eval()
    torch.set_num_threads(threads)


#: every prediction of the 8 x 8 grid is kept (3 per point): 192 masks, past the code switch at 127
KEEP_ALL = {"points_per_side": 8, "pred_iou_thresh": -100.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
PAIR = Pair("astronaut", "astronaut.png", "astronaut.png")  # type: ignore[arg-type]


def test_sam_runs_the_real_generator_and_encodes_its_masks(tiny_sam):
    from segment_anything import SamAutomaticMaskGenerator

    image = photo()
    labels = SamMasks.from_model(tiny_sam, **KEEP_ALL)(image, PAIR)
    pixels = np.rint(image * 255).astype(np.uint8)
    masks = [record["segmentation"] for record in SamAutomaticMaskGenerator(tiny_sam, **KEEP_ALL).generate(pixels)]
    assert len(masks) == 192
    assert labels.dtype == np.uint8 and labels.shape == (48, 64)
    assert np.array_equal(labels, official_gray_map(masks))  # its groups are the level sets of the encoded masks
    assert len(np.unique(labels)) > 2


def test_bgr_hands_sam_the_channel_swapped_image(tiny_sam):
    image = photo()
    bgr = SamMasks.from_model(tiny_sam, channel_order="bgr", **KEEP_ALL)
    received = []
    generate = bgr.generator.generate
    bgr.generator.generate = lambda pixels: received.append(pixels) or generate(pixels)
    labels = bgr(image, PAIR)
    assert np.array_equal(received[0], np.rint(image[..., ::-1] * 255).astype(np.uint8))
    rgb = SamMasks.from_model(tiny_sam, **KEEP_ALL)
    assert np.array_equal(labels, rgb(np.ascontiguousarray(image[..., ::-1]), PAIR))
    assert not np.array_equal(labels, rgb(image, PAIR))


def test_a_checkpoint_of_another_model_type_is_named(tmp_path):
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 1, 1)}, tmp_path / "sam.pth")
    with pytest.raises(SegmentationError) as error:
        SamMasks(str(tmp_path / "sam.pth"), model_type="vit_h")(photo(), PAIR)
    message = str(error.value)
    assert "sam.pth: a vit_b checkpoint, but model_type is vit_h; set model_type: vit_b" in message
    assert "\n" not in message


def test_a_missing_checkpoint_is_an_error_only_when_masks_are_computed(tmp_path, tiny_sam):
    missing = SamMasks(str(tmp_path / "sam_vit_h.pth"))  # building the source needs no checkpoint
    with pytest.raises(SegmentationError) as error:
        missing(photo(), PAIR)
    message = str(error.value)
    assert f"no SAM vit_h checkpoint at {tmp_path / 'sam_vit_h.pth'}" in message and "\n" not in message
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in message

    parameters = {"type": "sam", "checkpoint": "sam_vit_h.pth"}
    computed = CachedSource(SamMasks.from_model(tiny_sam, **KEEP_ALL), tmp_path / "cache", parameters)(photo(), PAIR)
    assert np.array_equal(CachedSource(missing, tmp_path / "cache", parameters)(photo(), PAIR), computed)


def masked_config(root, source, **dataset):
    """A config whose stack has a prior that requires masks (``label_mean``), trained on root/input and
    root/target with masks from ``source``."""
    folders = {"input_dir": str(root / "input"), "target_dir": str(root / "target")}
    data = {"train": {"type": "paired_folder", **folders, **dataset, "aux": {"masks": source}}}
    stack = {"priors": [{"type": "label_mean"}], "backbone": {"type": "unet.tiny"}}
    (root / "masks.yaml").write_text(yaml.safe_dump({"stack": stack, "data": data}))
    return root / "masks.yaml"


@pytest.mark.usefixtures("test_components")
def test_a_sam_dataset_builds_without_its_checkpoint_and_says_what_to_get_when_a_map_is_missing(tmp_path):
    write_image(tmp_path / "input" / "a.png", photo())
    write_image(tmp_path / "target" / "a.png", photo())
    source = {"type": "sam.sam_deblur", "checkpoint": str(tmp_path / "sam_vit_h.pth"), "cache": str(tmp_path / "c")}
    config = masked_config(tmp_path, source)
    resolved = resolve_config(config)
    assert resolved.datasets["train"].aux["masks"].to_dict()["channel_order"] == "bgr"  # the preset
    dataset = resolved.build_dataset("train")
    with pytest.raises(MaskError, match=r"a.png: no cached map in .*no SAM vit_h checkpoint at .*sam_vit_h_4b8939.pth"):
        dataset[0]


# ---------------------------------------------------------------- classical segmentations


def test_felzenszwalb_partitions_a_photo_into_a_plausible_number_of_segments():
    labels = FelzenszwalbMasks()(photo("astronaut", (256, 256)), PAIR)
    sizes = np.bincount(labels.ravel())
    assert labels.dtype == np.uint8 and labels.shape == (256, 256)
    assert 10 <= len(sizes) <= 100 and sizes.min() >= 200  # ids 0..n-1, each at least min_size pixels
    fine = FelzenszwalbMasks(scale=20, sigma=0.5, min_size=5)(photo("astronaut", (256, 256)), PAIR)
    assert fine.dtype == np.int32 and fine.max() >= 256  # beyond uint8


def test_slic_gives_about_the_requested_number_of_superpixels():
    labels = SlicMasks(n_segments=50)(photo("coffee", (128, 192)), PAIR)
    assert labels.dtype == np.uint8 and labels.shape == (128, 192)
    assert 25 <= labels.max() + 1 <= 75 and np.bincount(labels.ravel()).min() > 0


# ---------------------------------------------------------------- files


@pytest.fixture
def sam_deblur_folders(tmp_path):
    """SAM-Deblur's test layout: input/, input_mask/ (gray PNG, same name) and grouped_masks/ (<stem>.npz)."""
    image = photo()
    write_image(tmp_path / "input" / "scene-001.png", image)
    gray = official_gray_map([np.random.default_rng(i).random((48, 64)) < 0.3 for i in range(6)])
    (tmp_path / "input_mask").mkdir()
    cv2.imwrite(str(tmp_path / "input_mask" / "scene-001.png"), gray)
    (tmp_path / "grouped_masks").mkdir()
    np.savez_compressed(tmp_path / "grouped_masks" / "scene-001.npz", masks=official_groups(gray))
    pair = Pair("scene-001", tmp_path / "input" / "scene-001.png", tmp_path / "target" / "scene-001.png")
    return tmp_path, image, gray, pair


def test_mask_files_read_gray_pngs_and_grouped_npz(sam_deblur_folders):
    root, image, gray, pair = sam_deblur_folders
    assert np.array_equal(MaskFiles(str(root / "input_mask"))(image, pair), gray)
    labels = MaskFiles(str(root / "grouped_masks"), format="npz")(image, pair)
    assert np.array_equal(np.unique(gray)[labels], gray)
    (root / "input_mask" / "scene-001.npz").write_bytes((root / "grouped_masks" / "scene-001.npz").read_bytes())
    assert np.array_equal(MaskFiles(str(root / "input_mask"))(image, pair), gray)  # auto prefers the PNG


def test_mask_files_name_the_files_on_a_size_mismatch_or_a_missing_map(sam_deblur_folders):
    root, image, gray, pair = sam_deblur_folders
    cv2.imwrite(str(root / "input_mask" / "scene-001.png"), gray[:40])
    with pytest.raises(
        SegmentationError, match=r"input_mask/scene-001.png is 64x40 but .*input/scene-001.png is 64x48"
    ):
        MaskFiles(str(root / "input_mask"))(image, pair)
    other = Pair("scene-002", root / "input" / "scene-002.png", root / "target" / "scene-002.png")
    with pytest.raises(SegmentationError, match=r"input/scene-002.png: no masks file in .*grouped_masks"):
        MaskFiles(str(root / "grouped_masks"), format="npz")(image, other)


# ---------------------------------------------------------------- registration and end to end


def test_the_records_import_no_torch_and_their_factories_load():
    code = (
        "import sys, deblurstack.plugins.segmentation as p; assert 'torch' not in sys.modules; "
        "print(sorted(r.name for r in p.deblurstack_mask_sources()))"
    )
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert listed.strip() == "['felzenszwalb', 'flow_mask', 'mask_files', 'sam', 'slic']"
    from deblurstack.plugins.segmentation import deblurstack_mask_sources

    assert all(callable(record.load_factory()) for record in deblurstack_mask_sources())


@pytest.mark.usefixtures("test_components")
def test_felzenszwalb_masks_feed_a_stack_aligned_with_the_crops(tmp_path):
    for name, size in [("astronaut", (64, 80)), ("coffee", (56, 72))]:
        write_image(tmp_path / "input" / f"{name}.png", photo(name, size))
        write_image(tmp_path / "target" / f"{name}.png", photo(name, size))
    source = {"type": "felzenszwalb", "scale": 100.0, "min_size": 20, "cache": str(tmp_path / "cache")}
    config = masked_config(tmp_path, source, patch_size=32, augment=True)
    resolved = resolve_config(config)
    dataset, stack = resolved.build_dataset("train"), resolved.build_stack()
    full = FelzenszwalbMasks(scale=100.0, min_size=20)
    for key in [(0, 3, 0), (1, 4, 0), (1, 5, 2), (0, 6, 1)]:
        sample = dataset[key]
        image = sample["input"].permute(1, 2, 0).numpy()
        whole = dataset.load(dataset.pairs[key[0]])
        expected = full(whole["input"], dataset.pairs[key[0]])
        assert sample["masks"].dtype == torch.int64 and sample["masks"].shape == (32, 32)
        assert len(sample["masks"].unique()) > 1  # several segments in the crop, so alignment shows
        assert matching_window(whole["input"], expected, image, sample["masks"].numpy())
        output = stack.run(sample["input"][None], {"masks": sample["masks"][None]})
        assert output.image.shape == (1, 3, 32, 32)
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 2


def matching_window(full_image, full_labels, crop, crop_labels) -> bool:
    """Whether the labels of the window and transform that produced ``crop`` are ``crop_labels``."""
    size = crop.shape[0]
    for transform in range(8):
        image, labels = dihedral(full_image, transform), dihedral(full_labels, transform)
        for top in range(image.shape[0] - size + 1):
            for left in range(image.shape[1] - size + 1):
                if np.array_equal(image[top : top + size, left : left + size], crop):
                    return np.array_equal(labels[top : top + size, left : left + size], crop_labels)
    raise AssertionError("the crop is no window of the image")
