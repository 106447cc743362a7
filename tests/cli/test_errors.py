"""Only user errors become one line and exit 2; a bug keeps its traceback; Ctrl-C is exit 130."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rwkvjax.cli.score
from rwkvjax.cli import main
from tests.conftest import REPO


def test_user_error_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "cli.py"), "score", "--model", str(tmp_path / "nope.bin"),
                        str(tmp_path / "x.txt")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope.bin" in lines[0], r.stderr


def test_bad_flag_value_names_the_flag(capsys):
    assert main(["generate", "--prompt", "hi", "--top-p", "1.5"]) == 2
    assert "--top-p 1.5" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise ValueError("an internal invariant broke")
    monkeypatch.setattr(rwkvjax.cli.score, "run", broken)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["score", "x.txt"])


def test_ctrl_c_is_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(rwkvjax.cli.score, "run", interrupted)
    assert main(["score", "x.txt"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
