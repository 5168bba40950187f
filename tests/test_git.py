"""git integration: the textconv filter, the external diff driver and the pre-commit hooks."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES, ROOT, run_pldc

DIFF = FIXTURES / "diff"
# The set-up docs/git.md documents; the tests below run git with exactly these settings.
TEXTCONV_CONFIG = ("diff.pld.textconv", "pldc textconv")
DRIVER_CONFIG = ("diff.pld.command", "pldc git-diff-driver")

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _environment(tmp_path: Path) -> dict[str, str]:
    """Isolate git from the user's configuration and put a `pldc` for this interpreter on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "pldc"
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pldc "$@"\n', encoding="utf-8")
    launcher.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "pldc tests",
        "GIT_AUTHOR_EMAIL": "pldc-tests@example.com",
        "GIT_COMMITTER_NAME": "pldc tests",
        "GIT_COMMITTER_EMAIL": "pldc-tests@example.com",
        "GIT_PAGER": "cat",
    }


class Repo:
    """A scratch git repository with the .gitattributes line this project ships."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "repo"
        self.path.mkdir()
        self.env = _environment(tmp_path)
        self.git("init", "-q")
        shutil.copy(ROOT / ".gitattributes", self.path / ".gitattributes")

    def git(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["git", *args], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"git {' '.join(args)} failed:\n{result.stderr}"
        return result

    def commit(self, name: str, source: Path) -> None:
        shutil.copy(source, self.path / name)
        self.git("add", ".")
        self.git("commit", "-q", "-m", f"add {name}")

    def shell(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path)
    repo.commit("rules.pld", DIFF / "base.old.pld")
    return repo


def _edit_condition(repo: Repo) -> None:
    path = repo.path / "rules.pld"
    source = path.read_text(encoding="utf-8")
    old = "when praises and not tone is cold"
    assert old in source
    path.write_text(source.replace(old, "when praises and not (tone is cold or complains)"), encoding="utf-8")


def test_repository_ships_gitattributes() -> None:
    lines = (ROOT / ".gitattributes").read_text(encoding="utf-8").splitlines()
    assert "*.pld diff=pld" in lines


def test_docs_show_tested_config() -> None:
    docs = (ROOT / "docs" / "git.md").read_text(encoding="utf-8")
    for key, value in (TEXTCONV_CONFIG, DRIVER_CONFIG):
        assert f'git config {key} "{value}"' in docs


def test_textconv_diff_shows_condition_change(repo: Repo) -> None:
    repo.git("config", *TEXTCONV_CONFIG)
    _edit_condition(repo)
    lines = repo.git("diff").stdout.splitlines()
    assert "-        when praises and not tone is cold" in lines
    assert "+        when praises and not (tone is cold or complains)" in lines
    changed = [line for line in lines if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert len(changed) == 2


def test_textconv_hides_layout_change(repo: Repo) -> None:
    repo.git("config", *TEXTCONV_CONFIG)
    repo.commit("layout.pld", DIFF / "layout.old.pld")
    shutil.copy(DIFF / "layout.new.pld", repo.path / "layout.pld")
    output = repo.git("diff", "--", "layout.pld").stdout
    assert "@@" not in output


def test_textconv_shows_order_change(repo: Repo) -> None:
    repo.git("config", *TEXTCONV_CONFIG)
    repo.commit("order.pld", DIFF / "order.old.pld")
    shutil.copy(DIFF / "order.new.pld", repo.path / "order.pld")
    lines = repo.git("diff", "--", "order.pld").stdout.splitlines()
    assert "+    priority 5" in lines
    assert "+#   D" in lines
    assert "-#   D" in lines


def test_textconv_keeps_unparsable_file(repo: Repo) -> None:
    repo.git("config", *TEXTCONV_CONFIG)
    shutil.copy(DIFF / "syntax_error.pld", repo.path / "rules.pld")
    result = repo.git("diff")
    assert '+rule R1 "Broken" {' in result.stdout.splitlines()
    assert "rules.pld:12:10: unexpected 'yes'" in result.stderr


def test_driver_diff_shows_condition_change(repo: Repo) -> None:
    repo.git("config", *DRIVER_CONFIG)
    _edit_condition(repo)
    lines = repo.git("diff").stdout.splitlines()
    assert lines[:4] == ["diff --pld a/rules.pld b/rules.pld", "--- a/rules.pld", "+++ b/rules.pld", "~ rule P1"]
    assert lines[4:] == [
        "    - when praises and not tone is cold",
        "    + when praises and not (tone is cold or complains)",
    ]


def test_driver_diff_of_new_file(repo: Repo) -> None:
    repo.git("config", *DRIVER_CONFIG)
    shutil.copy(DIFF / "sentiment.pld", repo.path / "new.pld")
    repo.git("add", "new.pld")
    lines = repo.git("diff", "--cached").stdout.splitlines()
    assert "--- /dev/null" in lines
    assert '+ rule P1 "Praise" (order 1)' in lines


def test_driver_diff_of_deleted_file(repo: Repo) -> None:
    repo.git("config", *DRIVER_CONFIG)
    repo.git("rm", "-q", "rules.pld")
    lines = repo.git("diff", "--cached").stdout.splitlines()
    assert "+++ /dev/null" in lines
    assert '- rule P1 "Praise" (was order 1)' in lines


def test_driver_diff_of_renamed_file(repo: Repo) -> None:
    repo.git("config", *DRIVER_CONFIG)
    repo.git("mv", "rules.pld", "renamed.pld")
    lines = repo.git("diff", "--cached", "-M").stdout.splitlines()
    assert lines[0] == "diff --pld a/rules.pld b/renamed.pld"
    assert lines[3] == "no semantic changes (layout and comments are not compared)"


def test_driver_falls_back_to_line_diff(repo: Repo) -> None:
    repo.git("config", *DRIVER_CONFIG)
    shutil.copy(DIFF / "syntax_error.pld", repo.path / "rules.pld")
    result = repo.git("diff")
    assert '+rule R1 "Broken" {' in result.stdout.splitlines()
    assert "b/rules.pld:12:10: error[E001]" in result.stderr
    assert "showing a line diff because a side does not parse" in result.stderr


def test_driver_in_log_needs_ext_diff(repo: Repo) -> None:
    repo.git("config", *DRIVER_CONFIG)
    _edit_condition(repo)
    repo.git("commit", "-q", "-am", "edit P1")
    assert "~ rule P1" in repo.git("log", "-p", "-1", "--ext-diff").stdout
    assert "~ rule P1" not in repo.git("log", "-p", "-1").stdout


def test_driver_with_wrong_arguments_is_usage_error() -> None:
    result = run_pldc("git-diff-driver", "rules.pld", "only-one")
    assert result.returncode == 2
    assert "expected PATH and 6 or 8 arguments from git, got 2" in result.stderr


def test_driver_reports_unmerged_path() -> None:
    result = run_pldc("git-diff-driver", "rules.pld")
    assert result.returncode == 0
    assert result.stdout == "* Unmerged path rules.pld\n"


def test_pldc_diff_on_git_show_output(repo: Repo) -> None:
    _edit_condition(repo)
    result = repo.shell("pldc diff <(git show HEAD:rules.pld) rules.pld")
    assert result.returncode == 0, result.stderr
    assert "    + when praises and not (tone is cold or complains)" in result.stdout.splitlines()


def test_textconv_missing_file_exits_3() -> None:
    result = run_pldc("textconv", "missing.pld")
    assert result.returncode == 3
    assert result.stderr == "pldc: error: missing.pld: file not found\n"


def test_textconv_lists_compiled_order() -> None:
    result = run_pldc("textconv", str(DIFF / "base.old.pld"))
    assert result.returncode == 0
    tail = result.stdout.splitlines()[-5:]
    assert tail == ["# compiled order (the first applicable rule decides):", "#   P1", "#   N1", "#   P2", "#   N2"]


def test_textconv_drops_comments() -> None:
    result = run_pldc("textconv", str(DIFF / "layout.new.pld"))
    assert "# a predicate" not in result.stdout
    assert "# The task." not in result.stdout


# ---- pre-commit hooks -------------------------------------------------------


def _hooks() -> dict[str, dict[str, str]]:
    entries = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    return {hook["id"]: hook for hook in entries}


def _run_hook(hook: dict[str, str], tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    """Run a hook's entry on ``files`` the way pre-commit does: the entry's words, then the file names."""
    command = [*shlex.split(hook["entry"]), *map(str, files)]
    env = _environment(tmp_path)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_hooks_declared() -> None:
    hooks = _hooks()
    assert sorted(hooks) == ["pldc-check", "pldc-fmt"]
    assert hooks["pldc-fmt"]["entry"] == "pldc fmt --check"
    assert hooks["pldc-check"]["entry"] == "pldc check"


@pytest.mark.parametrize("hook_id", ["pldc-fmt", "pldc-check"])
def test_hook_selects_pld_files(hook_id: str) -> None:
    hook = _hooks()[hook_id]
    assert hook["language"] == "python"
    assert re.search(hook["files"], "rulesets/contract_nli.pld")
    assert not re.search(hook["files"], "pldc/cli.py")
    assert not re.search(hook["files"], "notes.pld.bak")


def test_fmt_hook_passes_formatted_file(tmp_path: Path) -> None:
    result = _run_hook(_hooks()["pldc-fmt"], tmp_path, DIFF / "sentiment.pld")
    assert result.returncode == 0, result.stderr


def test_fmt_hook_fails_unformatted_file(tmp_path: Path) -> None:
    path = DIFF / "layout.new.pld"
    result = _run_hook(_hooks()["pldc-fmt"], tmp_path, path)
    assert result.returncode == 1
    assert result.stderr == f"{path}: not formatted; run `pldc fmt {path}`\n"


def test_check_hook_passes_valid_file(tmp_path: Path) -> None:
    result = _run_hook(_hooks()["pldc-check"], tmp_path, DIFF / "sentiment.pld")
    assert result.returncode == 0, result.stderr


def test_check_hook_fails_invalid_file(tmp_path: Path) -> None:
    path = FIXTURES / "malformed" / "undefined_label.pld"
    result = _run_hook(_hooks()["pldc-check"], tmp_path, path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}:12:10: error[E102]: undefined label 'maybe'")
