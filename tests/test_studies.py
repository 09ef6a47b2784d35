"""Studies: resumable ablations over seeds and test splits, paper-style tables, paired bootstrap comparisons, and
the self-contained HTML report in a real headless browser."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from deblurstack import hookimpl
from deblurstack.cli import main
from deblurstack.engine.prepare import EMBEDDED, synthesize
from deblurstack.engine.studies import (
    INPUT,
    ImageScore,
    MetricInfo,
    Score,
    Study,
    Trial,
    bootstrap_interval,
    compare,
    latex_table,
    load_study,
    markdown_table,
    summarize,
)
from deblurstack.registry import get_plugin_manager

# ---------------------------------------------------------------------- tables and intervals from known numbers


def known_study() -> Study:
    """Two variants, three seeds, two splits; numbers chosen so the table's cells are easy to check."""
    scores = [Score(INPUT, None, split, "psnr", 20.0) for split in ("gopro", "reds")]
    scores += [Score(INPUT, None, split, "mcr", 0.5) for split in ("gopro", "reds")]
    for seed, (a, b) in zip((0, 1, 2), ((25.0, 26.0), (26.0, 27.0), (27.0, 28.0)), strict=True):
        scores += [Score("cat", seed, "gopro", "psnr", a), Score("map", seed, "gopro", "psnr", b)]
        scores += [Score("cat", seed, "gopro", "mcr", 0.2), Score("map", seed, "gopro", "mcr", 0.1 * seed)]
        scores += [Score("cat", seed, "reds", "psnr", 24.0), Score("map", seed, "reds", "psnr", 23.0)]
        scores += [Score("cat", seed, "reds", "mcr", 0.3), Score("map", seed, "reds", "mcr", 0.4)]
    metrics = {"psnr": MetricInfo(True, "RGB, peak 1"), "mcr": MetricInfo(False, "share of collapsed images")}
    return Study("sam", ["cat", "map"], [0, 1, 2], ["gopro", "reds"], metrics, scores)


def test_cells_are_means_and_sample_standard_deviations_over_seeds_with_the_best_in_bold():
    study = known_study()
    cells = summarize(study)
    assert cells["map", "gopro", "psnr"].mean == 27.0 and cells["map", "gopro", "psnr"].std == 1.0  # ddof 1
    assert cells[INPUT, "gopro", "psnr"].std is None  # one value: the mean only
    lines = markdown_table(study).splitlines()
    assert lines[2] == "| variant | gopro: psnr ↑ | gopro: mcr ↓ | reds: psnr ↑ | reds: mcr ↓ |"
    assert lines[4] == "| blurry input | 20.00 | 0.5000 | 20.00 | 0.5000 |"
    assert lines[5] == "| cat | 26.00 ± 1.00 | 0.2000 ± 0.0000 | **24.00 ± 0.00** | **0.3000 ± 0.0000** |"
    assert lines[6] == "| map | **27.00 ± 1.00** | **0.1000 ± 0.1000** | 23.00 ± 0.00 | 0.4000 ± 0.0000 |"
    text = "\n".join(lines)
    assert "- `psnr`: RGB, peak 1" in text and "- `mcr`: share of collapsed images" in text
    assert "ddof 1" in text and "3 seeds (0, 1, 2)" in text
    latex = latex_table(study)
    assert "\\multicolumn{2}{c}{gopro} & \\multicolumn{2}{c}{reds}" in latex
    assert "map & \\textbf{27.00 $\\pm$ 1.00} & \\textbf{0.1000 $\\pm$ 0.1000} & 23.00 $\\pm$ 0.00" in latex
    assert "mcr $\\downarrow$" in latex and "\\cmidrule(lr){2-3} \\cmidrule(lr){4-5}" in latex


def test_a_failed_seed_is_marked_and_its_variant_reported_from_the_others():
    study = known_study()
    study.scores = [s for s in study.scores if not (s.variant == "map" and s.seed == 2)]
    study.trials = [Trial("map", 2, "k", status="failed", reason="TrainingError: the loss is not finite")]
    lines = markdown_table(study).splitlines()
    assert lines[6].startswith("| map | **26.50 ± 0.71 (2 of 3)** |")
    assert "- map, seed 2: TrainingError: the loss is not finite" in lines


def test_bootstrap_interval_and_paired_comparison_from_known_numbers():
    low, high = bootstrap_interval([1.0] * 10)
    assert low == high == 1.0
    values = np.random.default_rng(5).normal(0.5, 1.0, 400)
    low, high = bootstrap_interval(values)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))  # the normal interval the bootstrap approaches
    assert abs(low - (values.mean() - half)) < 0.02 and abs(high - (values.mean() + half)) < 0.02
    assert bootstrap_interval(values) == (low, high)  # a fixed seed
    study = known_study()
    study.images = [ImageScore(INPUT, None, "gopro", f"im{index}", "psnr", 20.0) for index in range(5)]
    for seed in (0, 1):
        for index in range(5):  # map beats cat by 1 dB on images 0-3 and loses 1 dB on image 4, under both seeds
            study.images += [
                ImageScore("cat", seed, "gopro", f"im{index}", "psnr", 25.0),
                ImageScore("map", seed, "gopro", f"im{index}", "psnr", 26.0 if index < 4 else 24.0),
            ]
    result = compare(study, "map", "cat", "gopro", "psnr")
    assert result.mean == pytest.approx(0.6) and (result.better, result.worse, result.equal) == (4, 1, 0)
    assert result.images == 5 and result.seeds == [0, 1] and result.low < 0.6 < result.high
    against_input = compare(study, "cat", "input", "gopro", "psnr")
    assert against_input.mean == 5.0 and against_input.seeds == [0, 1] and against_input.better == 5
    assert "map − cat on gopro psnr: +0.6000 (95% CI" in result.text()


# ---------------------------------------------------------------------- a real ablation at toy size


@pytest.fixture(scope="module")
def study_data(tmp_path_factory):
    """Pairs 24 px on the longer side: two photos to train on, two to test on under two blur strengths."""
    root = tmp_path_factory.mktemp("study")
    blur = get_plugin_manager().get("synthesizer", "motion_blur").load_factory()
    mild, strong = blur(kernel_size=7, max_length=3.0), blur(kernel_size=9, max_length=7.0)
    synthesize(EMBEDDED, root / "train", mild, seed=0, per_image=1, max_side=24, names=["astronaut", "rocket"])
    synthesize(EMBEDDED, root / "test", mild, seed=1, per_image=1, max_side=24, names=["chelsea", "coffee"])
    synthesize(EMBEDDED, root / "strong", strong, seed=2, per_image=1, max_side=24, names=["chelsea", "coffee"])
    return root


def study_config(path: Path, data: Path) -> Path:
    def split(name, **extra):
        return {
            "type": "paired_folder",
            "input_dir": str(data / name / "input"),
            "target_dir": str(data / name / "target"),
            **extra,
        }

    config = {
        "name": "toy",
        "seed": 3,
        "stack": {"backbone": {"type": "unet.tiny"}, "losses": [{"type": "l1"}]},
        "data": {"train": split("train", patch_size=16), "test": split("test"), "strong": split("strong")},
        "metrics": [{"type": "psnr"}, {"type": "ssim"}],
        "train": {"type": "supervised", "iterations": 2, "batch_size": 2, "log_every": 1, "keep_last": 1},
        "variants": {"l1": {}, "charbonnier": {"stack.losses": [{"type": "charbonnier"}]}},
        "ablation": {"splits": ["test", "strong"]},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class FailOnce:
    """Makes the training of one run fail at its first step."""

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name

    @hookimpl
    def deblurstack_train_step_end(self, run, logs):
        if run.directory.name == self.run_name:
            raise RuntimeError("injected failure")


def test_an_ablation_resumes_skipping_finished_trials_and_marks_failures(tmp_path, study_data, register_plugin, capsys):
    config = study_config(tmp_path / "toy.yaml", study_data)
    runs = tmp_path / "runs"
    register_plugin(FailOnce("toy-charbonnier-s4"), name="fail_once")
    assert main(["ablation", str(config), "--seeds", "2", "--runs-dir", str(runs), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "trained 3, skipped 0 (finished before), failed 1; scored 6, reused 0" in out
    folder = runs / "toy-ablation"
    table = (folder / "table.md").read_text()
    assert "| variant | test: psnr ↑ | test: ssim ↑ | strong: psnr ↑ | strong: ssim ↑ |" in table
    assert re.search(r"\| charbonnier \| [\d.]+ \(1 of 2\) \|", table)
    assert "- charbonnier, seed 4: RuntimeError: injected failure" in table
    with open(folder / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    failed = [r for r in rows if r["status"] == "failed"]
    assert {(r["variant"], r["seed"], r["split"]) for r in failed} == {
        ("charbonnier", "4", s) for s in ("test", "strong")
    }
    done = {(r["variant"], r["seed"], r["split"], r["metric"]) for r in rows if r["status"] == "done"}
    assert ("input", "", "strong", "psnr") in done and ("l1", "4", "test", "ssim") in done and len(done) == 16
    document = json.loads((folder / "results.json").read_text())
    assert document["metrics"]["psnr"]["higher_is_better"] and document["splits"] == ["test", "strong"]
    with open(folder / "per_image.csv", newline="") as file:
        images = list(csv.DictReader(file))
    assert len(images) == (3 + 1) * 2 * 2 * 2  # (3 trials + the input) x 2 splits x 2 images x 2 metrics
    for name in ("toy-l1-s3", "toy-l1-s4", "toy-charbonnier-s3"):
        assert (runs / name / "checkpoints").is_dir()
    get_plugin_manager().unregister(name="fail_once")

    # again, with a third seed: the finished trials are skipped, the failed one and the new seed train
    config_data = yaml.safe_load(config.read_text())
    config_data["ablation"]["seeds"] = [3, 4, 5]
    config.write_text(yaml.safe_dump(config_data, sort_keys=False))
    assert main(["ablation", str(config), "--runs-dir", str(runs), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "trained 3, skipped 3 (finished before), failed 0; scored 6, reused 6" in out
    (folder / "runs.json").unlink()  # an ablation that lost track of its runs resumes them from their checkpoints
    assert main(["ablation", str(config), "--runs-dir", str(runs), "--no-report", "--variants", "l1"]) == 0
    assert "trained 3 (3 resumed), skipped 0" in capsys.readouterr().out
    assert main(["ablation", str(config), "--runs-dir", str(runs), "--no-report"]) == 0
    assert "trained 3 (3 resumed), skipped 3 (finished before), failed 0" in capsys.readouterr().out
    study = load_study(runs)
    assert study.seeds == [3, 4, 5] and not study.failures()
    assert summarize(study)["charbonnier", "strong", "psnr"].n == 3

    # the paired comparison from the command line, and bad input
    assert main(["compare", str(folder), "--a", "charbonnier", "--b", "l1", "--split", "strong"]) == 0
    assert re.match(
        r"charbonnier − l1 on strong psnr: [-+][\d.]+ \(95% CI .* seeds 3, 4, 5\); charbonnier better",
        capsys.readouterr().out,
    )
    assert main(["compare", str(folder), "--a", "nope", "--b", "l1"]) == 2
    assert "no such variant (variants: input, l1, charbonnier)" in capsys.readouterr().err
    assert main(["ablation", str(config), "--runs-dir", str(runs), "--splits", "test,gopro"]) == 2
    assert "--splits: no split 'gopro' (splits defined: train, test, strong)" in capsys.readouterr().err
    shutil.copytree(folder, runs / "other-ablation")
    assert main(["report", str(runs)]) == 2
    assert "ablations of different configs: other-ablation (config" in capsys.readouterr().err


def test_trials_in_parallel_subprocesses_give_the_sequential_results_under_one_progress_bar(
    tmp_path, study_data, capsys
):
    config = study_config(tmp_path / "toy.yaml", study_data)
    sequential, parallel = tmp_path / "sequential", tmp_path / "parallel"
    assert main(["ablation", str(config), "--runs-dir", str(sequential), "--no-report"]) == 0
    out, err = capsys.readouterr()
    assert "trained 2, skipped 0 (finished before), failed 0; scored 4, reused 0" in out
    assert "l1 seed 3: training" in err and "charbonnier seed 3: scoring strong" in err  # the ablation's bar
    assert re.search(r"ablation: 100%.*\| 2/2 \[[\d:]+<[\d:]+", err)  # trials done / total, elapsed < ETA
    assert re.search(r"\n\rtoy-charbonnier-s3: .*?\x1b\[A", err)  # each run's own bar, one line below (then cursor up)
    command = [
        "ablation",
        str(config),
        "--runs-dir",
        str(parallel),
        "--no-report",
        "--jobs",
        "2",
        "--devices",
        "cpu,cpu",
    ]
    assert main(command) == 0
    out, err = capsys.readouterr()
    assert "trained 2, skipped 0 (finished before), failed 0; scored 4, reused 0" in out
    assert "ablation: training l1, seed 3 on cpu" in err and "ablation: training charbonnier, seed 3 on cpu" in err
    folder = parallel / "toy-ablation"
    for name in ("results.csv", "per_image.csv", "table.md", "table.tex"):  # the same numbers: deterministic on CPU
        assert (folder / name).read_text() == (sequential / "toy-ablation" / name).read_text(), name
    runs = [f"toy-{variant}-s3" for variant in ("l1", "charbonnier")]
    assert sorted(p.name for p in (folder / "jobs").iterdir()) == sorted(
        f"{run}.{what}" for run in runs for what in ("yaml", "train.log", "test.log", "strong.log")
    )
    assert "run folder: " in (folder / "jobs" / "toy-l1-s3.train.log").read_text()
    assert (
        json.loads((folder / "runs.json").read_text()).keys()
        == json.loads((sequential / "toy-ablation" / "runs.json").read_text()).keys()
    )  # the same trial keys: the written configs resolve to the same explicit configs

    # --plan writes the trials' configs (plain train configs, e.g. for torchrun) and prints their commands; the
    # ablation then takes runs trained from them (as it takes the runs of the subprocesses here) without training
    assert main(["ablation", str(config), "--runs-dir", str(parallel), "--plan"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"deblurstack train {folder / 'jobs' / run}.yaml --runs-dir {parallel}" for run in runs
    ]
    (folder / "runs.json").unlink()
    assert main(["ablation", str(config), "--runs-dir", str(parallel), "--no-report", "--variants", "l1"]) == 0
    assert "trained 1 (1 resumed), skipped 0 (finished before), failed 0; scored 0, reused 2" in capsys.readouterr().out

    # a subprocess that fails: its last line is the reason
    from deblurstack.config import load_config
    from deblurstack.engine.studies import JobFailed, _Subprocesses

    trial_config = load_config(folder / "jobs" / "toy-l1-s3.yaml")
    with pytest.raises(
        JobFailed, match=r"deblurstack: error: .*missing\.pth.*\(exit status 2; .*toy-l1-s3\.test\.log\)"
    ):
        _Subprocesses(folder / "jobs").test(trial_config, str(tmp_path / "missing.pth"), "test", tmp_path / "o", "cpu")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const decoded = images.filter((image) => image.complete && image.naturalWidth > 0);
  document.body.setAttribute("data-images", images.length + "/" + decoded.length);
});
</script>"""


def test_the_html_report_is_self_contained_and_every_image_shows_in_headless_chromium(tmp_path, study_data, capsys):
    config = study_config(tmp_path / "toy.yaml", study_data)
    runs = tmp_path / "runs"
    assert main(["ablation", str(config), "--runs-dir", str(runs)]) == 0
    folder = runs / "toy-ablation"
    page = (folder / "report.html").read_text()
    assert f"report: {folder / 'report.html'}" in capsys.readouterr().out
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "http" not in page  # nothing to fetch
    pngs = sorted(p.name for p in (folder / "report").glob("*.png"))
    assert pngs == sorted(
        ["bars_psnr.png", "bars_ssim.png", "curves.png", "gain_test.png", "gain_strong.png"]
        + ["crops_test.png", "crops_strong.png"]
    )
    assert page.count("<img ") == len(pngs) and "Paired comparisons" in page and "<b>" in page
    assert main(["report", str(folder)]) == 0  # again from the files alone

    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the report was not opened in a browser")
    checked = folder / "checked.html"
    checked.write_text(page.replace("</body>", CHECK_IMAGES + "</body>"))
    flags = [
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--virtual-time-budget=5000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([browser, *flags, "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=60)
    assert f'data-images="{len(pngs)}/{len(pngs)}"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600", (folder / "report.html").as_uri()],
        capture_output=True,
        timeout=60,
    )
    pixels = cv2.imread(str(shot))
    assert pixels is not None and pixels.astype(np.float64).var() > 0
