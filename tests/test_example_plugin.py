"""The example third-party package, installed with pip and used through its entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "examples" / "edge_plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """pip-install the example package (no dependencies, no build isolation) into its own folder. pip builds in the
    folder it installs from: a copy, so parallel test processes never share (nor leave) a build folder."""
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("source") / PACKAGE.name
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    assert (target / "deblurstack_edges-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def run(site, *args, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, check=check)


def test_the_installed_plugin_is_listed_with_its_distribution(site):
    listing = run(site, "-m", "deblurstack", "components", "list", "--kind", "prior").stdout
    assert "sobel_edges" in listing and "edges (deblurstack-edges 0.1.0)" in listing
    plugins = run(site, "-m", "deblurstack", "plugins", "list").stdout
    assert any(line.split()[:3] == ["edges", "deblurstack-edges", "0.1.0"] for line in plugins.splitlines())


def test_its_yaml_stack_checks_with_a_builtin_backbone(site):
    result = run(site, "-m", "deblurstack", "config", "check", "examples/edge_plugin/stack.yaml")
    stack = yaml.safe_load(result.stdout)["stack"]
    assert stack["priors"] == [{"type": "sobel_edges", "scale": 0.25}]
    assert stack["backbone"]["in_channels"] == 4
    assert [loss["type"] for loss in stack["losses"]] == ["psnr", "gradient_l1"]


def test_its_stack_trains_a_step(site):
    code = (
        "import torch\n"
        "from deblurstack import build_stack\n"
        "stack = build_stack('examples/edge_plugin/stack.yaml')\n"
        "optimizer = torch.optim.Adam(stack.parameters(), 1e-3)\n"
        "x, y = torch.rand(2, 3, 32, 40), torch.rand(2, 3, 32, 40)\n"
        "total, terms = stack.compute_loss(stack.run(x), {'input': x, 'target': y})\n"
        "total.backward(); optimizer.step()\n"
        "print(sorted(terms), type(stack.priors[0]).__module__)\n"
    )
    assert run(site, "-c", code).stdout.strip() == "['gradient_l1', 'psnr'] deblurstack_edges.prior"


def test_its_own_tests_pass_with_the_deblurstack_pytest_plugin(site):
    result = run(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PACKAGE / "tests"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_blocking_the_plugin_by_name_removes_it(site):
    result = run(
        site, "-m", "deblurstack", "--block", "edges", "config", "check", "examples/edge_plugin/stack.yaml", check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "deblurstack: error: examples/edge_plugin/stack.yaml: stack.priors[0].type: unknown prior 'sobel_edges' "
        "(choose from: bsa, lbp, sam_cat, sam_map)",
        "deblurstack: error: examples/edge_plugin/stack.yaml: stack.losses[1].type: unknown loss 'gradient_l1' "
        "(choose from: charbonnier, l1, mimo_unet, psnr, vgg16_perceptual)",
    ]
