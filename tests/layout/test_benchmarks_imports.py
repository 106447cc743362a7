"""Benchmarks import no test module: what both need lives in `benchmarks.common`, which the tests import."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO


def _imported(path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_no_benchmark_imports_a_test_module():
    files = sorted((REPO / "benchmarks").rglob("*.py"))
    assert len(files) > 10
    bad = {str(f.relative_to(REPO)): sorted(m for m in _imported(f) if m == "tests" or m.startswith("tests."))
           for f in files}
    assert {f: m for f, m in bad.items() if m} == {}


def test_the_shared_fixtures_import_without_the_test_suite():
    """`benchmarks.common` stands on its own: importing it loads no module of tests/."""
    code = ("import sys; import benchmarks.common.checkpoints, benchmarks.common.wkv_reference, "
            "benchmarks.common.sessions, benchmarks.common.redteam; "
            "print(sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
