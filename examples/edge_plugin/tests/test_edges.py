"""Tests of the example plugin, written with deblurstack's pytest plugin."""

from pathlib import Path

import torch

import deblurstack_edges
from deblurstack import build_stack
from deblurstack.testing import check_component

STACK = Path(__file__).parents[1] / "stack.yaml"


def test_components_keep_the_contracts(builtin_plugin_manager, register_plugin):
    register_plugin(deblurstack_edges, name="edges")
    check_component("prior", "sobel_edges")
    check_component("loss", "gradient_l1")


def test_the_edge_map_is_zero_on_a_flat_image_and_one_on_a_unit_step(builtin_plugin_manager, register_plugin):
    register_plugin(deblurstack_edges, name="edges")
    from deblurstack_edges.prior import SobelEdges

    flat = torch.full((1, 3, 8, 8), 0.5)
    assert SobelEdges()(flat, {}).channels.abs().max() < 1e-5
    step = torch.zeros(1, 3, 8, 8)
    step[..., 4:] = 1.0
    edges = SobelEdges()(step, {}).channels[0, 0]
    assert torch.allclose(edges[:, 3:5], torch.ones(8, 2), atol=1e-5)


def test_the_prior_composes_with_a_builtin_backbone(builtin_plugin_manager, register_plugin):
    register_plugin(deblurstack_edges, name="edges")
    stack = build_stack(STACK)
    assert stack.backbone.inc.double_conv[0].in_channels == 4
    blurry, sharp = torch.rand(2, 3, 33, 47), torch.rand(2, 3, 33, 47)
    total, terms = stack.compute_loss(stack.run(blurry), {"input": blurry, "target": sharp})
    total.backward()
    assert set(terms) == {"psnr", "gradient_l1"}
