"""`cli.py -h` and `cli.py COMMAND -h` stay light: no jax, orbax, numpy or torch import (time: benchmarks/cli_startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rwkvjax.cli import COMMANDS
from tests.conftest import REPO

HEAVY = ("jax", "jaxlib", "orbax", "optax", "numpy", "torch", "safetensors", "tensorstore", "flax", "chex")

_PROBE = """
import json, sys
sys.argv = ["cli.py"] + json.loads(sys.argv[1])
sys.path.insert(0, {repo!r})
from rwkvjax.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})), file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["-h"]] + [[c, "-h"] for c in COMMANDS], ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_module(argv):
    code = _PROBE.format(repo=str(REPO), heavy=HEAVY)
    r = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout
    assert json.loads(r.stderr.strip().splitlines()[-1]) == []


def test_every_command_flag_shows_its_default():
    for name in COMMANDS:
        r = subprocess.run([sys.executable, str(REPO / "cli.py"), name, "-h"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        opts = r.stdout.split("options:")[1]
        flags = [ln for ln in opts.splitlines() if ln.strip().startswith("--")]
        # each option's help block carries its default (flags without one are required and say nothing)
        blocks = opts.split("\n  -")[2:]
        for b in blocks:
            if "required" in b:
                continue
            assert "(default:" in b.replace("\n", " ").replace("  ", " "), (name, b)
        assert flags, name
