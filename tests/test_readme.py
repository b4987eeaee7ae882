"""The README runs as written: every Python block against the built-in sample, and its command lists."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aa4xr.cli import parser

README = Path(__file__).resolve().parents[1] / "README.md"
#: A block holding this comment needs what CI lacks (a cluster, the network) and is not run.
NOT_RUN = "# not run in tests"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def python_blocks() -> list:
    out = []
    for i, code in enumerate(blocks("python")):
        marks = [pytest.mark.skip(reason="marked in the README")] if NOT_RUN in code else []
        if re.search(r"^\s*(import torch|from torch|import aa4xr, torch)|aa4xr\.torch", code, re.M) \
                and importlib.util.find_spec("torch") is None:
            marks.append(pytest.mark.skip(reason="needs torch"))
        out.append(pytest.param(code, id=f"block{i}-line{README.read_text().index(code)}", marks=marks))
    return out


def test_the_readme_has_python_blocks_and_few_are_skipped():
    codes = blocks("python")
    assert len(codes) >= 3
    assert sum(NOT_RUN in c for c in codes) <= 1


@pytest.mark.parametrize("code", python_blocks())
def test_python_block_runs_as_written(code, tmp_path):
    """Each block in a fresh interpreter in an empty folder (files it writes land there); the
    interpreter inherits the session's private cache, so the sample is written there once."""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_ci_command_is_one_line_that_installs_and_runs_the_tests():
    text = README.read_text()
    after = text[text.index("<!-- ci-test-command -->"):]
    (command,) = re.findall(r"```bash\n(.*?)\n```", after, flags=re.S)[:1]
    assert "\n" not in command and "pip install" in command and "pytest" in command


def test_command_line_section_lists_every_sub_command_and_option():
    text = README.read_text()
    section = text[text.index("### Command line"):]
    section = section[:section.index("\n#", 1)]
    subcommands = next(a for a in parser()._actions if a.dest == "command").choices
    for name, sub in subcommands.items():
        assert f"`aa4xr {name}" in section, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in section, (name, flag)
