"""Compressor baselines are the tools a user would run, on the same bytes; priming charges only the new part."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rwkvjax.eval import compressors
from tests.conftest import CLAUDE_PROJECTS

# 16 KB of a real session that no one here edits (a source file of the repo changes size and content with the code,
# and PPMd's cost of a repeat with it)
DATA = (CLAUDE_PROJECTS / "-Users-yoav-projects-alignment-hive" / "f968233b-ebe5-4958-aa2d-69a2d8e7413c.jsonl"
        ).read_bytes()[:16384]


@pytest.mark.parametrize("name,argv", [("gzip -9", ["gzip", "-9", "-n", "-c"]), ("xz -9e", ["xz", "-9e", "-c"])])
def test_same_size_as_the_command_line_tool(name, argv):
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed here (the library figure stands alone)")
    cli = len(subprocess.run(argv, input=DATA, capture_output=True, check=True).stdout)
    ours = compressors.alone_bits(name, DATA) / 8
    assert abs(ours - cli) / cli < 0.01, (ours, cli)


def test_priming_with_the_same_text_makes_it_nearly_free():
    t = compressors.table(DATA, prime=DATA)
    for name, row in t.items():
        assert row["primed"] < 0.3 * row["alone"], name  # PPMd o6 copies less well than LZ77/LZMA
    unrelated = compressors.table(DATA, prime=b"zq" * 3000)
    assert all(r["primed"] > 0.5 * r["alone"] for r in unrelated.values())


def test_ppmd_beats_nothing_and_all_are_below_raw():
    t = compressors.table(DATA)
    assert set(t) == set(compressors.COMPRESSORS)
    for row in t.values():
        assert 0 < row["alone"] < 8 * len(DATA)
