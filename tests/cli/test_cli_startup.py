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


@pytest.mark.parametrize("argv", [["-h"]] + [[c, "-h"] for c in COMMANDS] + [["state", "import", "-h"]],
                         ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_module(argv):
    code = _PROBE.format(repo=str(REPO), heavy=HEAVY)
    r = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout
    assert json.loads(r.stderr.strip().splitlines()[-1]) == []


def _help(*argv) -> str:
    r = subprocess.run([sys.executable, str(REPO / "cli.py"), *argv, "-h"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_every_command_flag_shows_its_default():
    pages = []
    for name in COMMANDS:
        text = _help(name)
        if "ACTION" in text.splitlines()[0]:  # a command with actions (`state`): every action's page
            actions = [ln.split()[0] for ln in text.split("positional arguments:")[1].splitlines()[2:]
                       if ln.startswith("    ") and not ln.startswith("     ")]
            assert actions, name
            pages += [(f"{name} {a}", _help(name, a)) for a in actions]
        else:
            pages.append((name, text))
    for name, text in pages:
        opts = text.split("options:")[1]
        flags = [ln for ln in opts.splitlines() if ln.strip().startswith("--")]
        # each option's help block carries its default, or says it is required
        for b in opts.split("\n  -")[2:]:
            b = b.replace("\n", " ").replace("  ", " ")
            assert "(default:" in b or "(required)" in b, (name, b)
        assert flags, name
