"""The README's commands are the ones CI runs, and its examples stay valid."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    command = ci[-1]
    assert "pytest" in command and command in readme.splitlines()


def test_the_readme_has_exactly_two_setup_commands():
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [
        line
        for line in re.findall(r"```bash\n(.*?)```", setup, re.S)[0].splitlines()
        if line and not line.startswith("#")
    ]
    assert len(commands) == 2
    assert all(command.startswith("python3 -m venv .venv && .venv/bin/pip install -e ") for command in commands)


def test_every_yaml_example_in_the_repository_checks(tmp_path, capsys):
    import yaml

    from deblurstack.cli import main

    # data folders must exist when a config is checked: give vars.data the folders `deblurstack quickstart` makes
    for folder in ("train/input", "train/target", "val/input", "val/target", "test/input", "test/target"):
        (tmp_path / folder).mkdir(parents=True)
    for path in sorted(REPO.glob("examples/*.yaml")):
        data = "data" in (yaml.safe_load(path.read_text()).get("vars") or {})
        assert main(["config", "check", str(path), *([f"vars.data={tmp_path}"] if data else [])]) == 0, path
    capsys.readouterr()
