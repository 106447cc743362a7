"""The dashboard's HTTP side on 127.0.0.1: page and scripts, metrics rows, the state tree, the key, the CLI and
the mount under `serve`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from rwkvjax.io.states import StateStore
from rwkvjax.serve.dashboard.app import STATIC
from tests.conftest import REPO
from tests.serve.conftest import running_server
from tests.serve.dashboard_util import get, get_json, running_dashboard

RECORDS = [
    {"step": 1, "time": 10.0, "loss": 5.5, "bits_per_byte": 8.0, "ood_ratio": math.nan, "gate": "accepted",
     "gate_counts": {"accepted": 1, "rolled_back": 0, "quarantined": 0}, "live_sessions": ["s1"]},
    {"step": 2, "time": 11.0, "loss": 5.25, "bits_per_byte": 7.75, "gate": "rolled_back",
     "gate_reason": "canary 8.4 bpb is 2.00% above its start 8.2 (bound 1.0%)", "live_sessions": ["s1"],
     "gate_counts": {"accepted": 1, "rolled_back": 1, "quarantined": 0},
     "replay_hist": {"edges": [1.0, 2.0, 3.0], "counts": [1, 1], "unit": "surprise, mean nats per unit"}},
]


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return run


def test_page_scripts_and_metrics_are_served(tmp_path):
    run = _run_folder(tmp_path)
    with running_dashboard(run) as url:
        status, headers, page = get(url + "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        for src in (b"static/vendor/uPlot.iife.min.js", b"static/charts.js", b"static/dashboard.js"):
            assert src in page  # relative: the page works at / and under /dashboard/
        status, _, lib = get(url + "/static/vendor/uPlot.iife.min.js")
        assert status == 200 and lib == (STATIC / "vendor" / "uPlot.iife.min.js").read_bytes()
        m = get_json(url + "/api/metrics?version=-1&next=0")
        assert [r["loss"] for r in m["rows"]] == [5.5, 5.25] and m["rows"][0]["ood_ratio"] is None
        assert m["rows"][1]["gate_counts/rolled_back"] == 1
        assert m["events"] == [{"step": 2, "decision": "rolled_back", "reason": RECORDS[1]["gate_reason"],
                                "session": "s1"}]
        assert m["latest"]["replay_hist"] == {"step": 2, "value": RECORDS[1]["replay_hist"]}
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": 3, "time": 12.0, "loss": 5.125}) + "\n")
        more = get_json(url + f"/api/metrics?version={m['version']}&next={m['next']}")
        assert [r["loss"] for r in more["rows"]] == [5.125]
        info = get_json(url + "/api/run")
        assert info["checkpoint"]["step"] is None and "no checkpoint yet" in info["checkpoint"]["error"]
        assert info["states"]["folder"] is None and info["states"]["tree"] == []


def test_state_tree_nests_forks_and_keeps_orphans(tmp_path):
    run = _run_folder(tmp_path)
    store = StateStore(tmp_path / "states")
    wkv = np.ones((1, 1, 4, 4), np.float32)
    put = lambda name, **kw: store.put(name, wkv, base_hash="h", tokenizer="bytes-256", **kw)
    top = put("proj", source={"checkpoint": str(run.absolute()), "step": 2})
    put("proj/web", parent=top.id, source={"checkpoint": str(run.absolute()), "step": 2, "scope": "project"})
    store.fork("proj", "proj/experiment")
    old = put("old")
    store.fork("old", "old/kept")
    # an orphan as a store written before `rm` refused parents holds one (today `rm` takes the subtree with it)
    for f in store.root.glob(f"{old.id}.*"):
        f.unlink()
    with running_dashboard(run, states=str(tmp_path / "states")) as url:
        st = get_json(url + "/api/run")["states"]
    assert st["origin"] == "--states"
    roots = {n["name"]: n for n in st["tree"]}
    assert set(roots) == {"proj", "old/kept"}
    assert roots["old/kept"]["orphan"] is True and roots["old/kept"]["kind"] == "fork"
    kids = {n["name"]: n for n in roots["proj"]["children"]}
    assert roots["proj"]["this_run"] and roots["proj"]["kind"] == "trained" and roots["proj"]["step"] == 2
    assert kids["proj/web"]["kind"] == "project" and kids["proj/experiment"]["kind"] == "fork"
    assert kids["proj/experiment"]["parent"] == top.id


def test_with_a_key_the_data_needs_it(tmp_path):
    run = _run_folder(tmp_path)
    with running_dashboard(run, api_key="s3cret") as url:
        assert get(url + "/")[0] == 200  # the page holds no data
        assert get(url + "/api/metrics")[0] == 401 and get(url + "/api/run")[0] == 401
        assert get(url + "/api/metrics?key=wrong")[0] == 401
        assert get_json(url + "/api/metrics?key=s3cret")["rows"]
        assert get_json(url + "/api/run", headers={"Authorization": "Bearer s3cret"})["checkpoint"]


def test_cli_refuses_a_missing_folder_in_one_line(tmp_path):
    missing = tmp_path / "no-such-run"
    r = subprocess.run([sys.executable, str(REPO / "cli.py"), "dashboard", "--ckpt-dir", str(missing)],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: {missing}: no such folder")


def test_serve_mounts_the_dashboard(tmp_path, small_model):
    run = _run_folder(tmp_path)
    with running_server(small_model, dashboard=str(run)) as url:
        status, headers, page = get(url + "/dashboard")  # redirected to /dashboard/, where relative URLs resolve
        assert status == 200 and b"static/dashboard.js" in page
        assert get(url + "/dashboard/static/dashboard.js")[0] == 200
        assert [r["step"] for r in get_json(url + "/dashboard/api/metrics")["rows"]] == [1, 2]
        assert get_json(url + "/v1/models")["data"][0]["id"] == "base"


def test_vendored_chart_library_is_the_locked_npm_package():
    lock = json.loads((REPO / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/uplot"]["version"]
    vendor = STATIC / "vendor"
    assert (vendor / "uPlot.iife.min.js").read_text().startswith(f"/*! https://github.com/leeoniya/uPlot (v{version})")
    dist = REPO / "node_modules" / "uplot"
    assert dist.is_dir(), "run `npm ci` (the README's test command does)"
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        assert (vendor / name).read_bytes() == (dist / "dist" / name).read_bytes(), name
    assert (vendor / "uPlot.LICENSE").read_bytes() == (dist / "LICENSE").read_bytes()
