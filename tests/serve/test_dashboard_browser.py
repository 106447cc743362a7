"""The dashboard in a real browser (headless Chromium through selenium) on a real, short training run.

The page is opened while the run trains. Then: no console errors; every chart's last value, the replay
histogram and the top merges equal metrics.jsonl; an appended record shows within 2 s; a torn line waits
for its end; the named-state tree follows the store. Screenshot and timings go to test-artifacts/.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rwkvjax
from rwkvjax.io.convert import save_official
from rwkvjax.io.states import StateStore
from rwkvjax.model.init import init_params
from rwkvjax.train.run import DEMO_TRACES
from tests.conftest import REPO
from tests.serve.dashboard_util import get_json, running_dashboard

pytestmark = pytest.mark.slow

SMALL = rwkvjax.Architecture(256, 64, 1, 128, 32, 32, 32, 32)
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900")
NEW_POINT_S = 2.0  # the bound for a new record to show


class Training:
    """`cli.py train` on a tiny model in the background; `finish()` waits for it (once)."""

    def __init__(self, tmp: Path):
        model = tmp / "small.safetensors"
        save_official(init_params(SMALL, 0, live_output=True), SMALL, model)
        traces = tmp / "projects"
        shutil.copytree(DEMO_TRACES, traces)
        self.ckpt, self.states = tmp / "run", tmp / "states"
        self.ckpt.mkdir()  # the dashboard starts before the trainer writes anything
        argv = [sys.executable, str(REPO / "cli.py"), "train", "--source", str(traces), "--model", str(model),
                "--ckpt-dir", str(self.ckpt), "--steps", "6", "--ctx-len", "32", "--replay-per-step", "2",
                "--save-every", "3", "--lr", "0.1", "--merges", "--merge-slots", "16", "--states", str(self.states)]
        env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.result = None

    def finish(self) -> list[dict]:
        if self.result is None:
            out, err = self.proc.communicate(timeout=900)
            self.result = (self.proc.returncode, err)
        assert self.result[0] == 0, self.result[1][-3000:]
        return [json.loads(x) for x in (self.ckpt / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    t = Training(tmp_path_factory.mktemp("dashboard"))
    yield t
    if t.proc.poll() is None:
        t.proc.kill()
        t.proc.wait(timeout=60)


@contextlib.contextmanager
def chromium(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in FLAGS + (f"--user-data-dir={profile}",):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(fn, timeout: float, every: float = 0.05):
    """fn()'s first truthy value within `timeout` seconds (None after it)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / every) + 2):
        v = fn()
        if v or time.monotonic() > deadline:
            return v or None
        time.sleep(every)
    return None


LAST_VALUES = """return [...document.querySelectorAll('[data-chart] table.last tr')].map(tr => {
  const v = tr.querySelector('td.value').dataset;
  return {chart: tr.closest('[data-chart]').dataset.chart, key: tr.dataset.key, value: v.value ?? null,
          step: v.step ?? null};
})"""


def field(rec: dict, key: str):
    """A record's value for a chart key: flat (`loss`, `role_bpb/user`) or inside a dict (`gate_counts/accepted`)."""
    if key in rec:
        v = rec[key]
    else:
        head, _, sub = key.partition("/")
        v = rec.get(head, {}).get(sub) if isinstance(rec.get(head), dict) else None
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def expected_last(records: list[dict], key: str):
    """(value, step) the chart must end on: the newest finite value, or a rate between the last two counts."""
    if key in ("merge_rate", "promotion_rate"):
        pts = [(r["step"], r[key.replace("merge_rate", "merges").replace("promotion_rate", "promotions")])
               for r in records if "merges" in r]
        (s0, c0), (s1, c1) = pts[-2], pts[-1]
        return (c1 - c0) / (s1 - s0), s1
    pts = [(field(r, key), r["step"]) for r in records if field(r, key) is not None]
    return pts[-1]


def test_the_page_follows_a_training_run_in_chromium(training, tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Chromium is not installed here (.ci/run installs it: apt-get install chromium chromium-driver)")
    ARTIFACTS.mkdir(exist_ok=True)
    timings = {}
    with running_dashboard(training.ckpt) as url, chromium(tmp_path / "profile") as d:
        t0 = time.monotonic()
        d.get(url + "/")
        assert wait_for(lambda: d.execute_script("return document.body.dataset.version"), 30), "no data came"
        timings["page_load_s"] = round(time.monotonic() - t0, 3)
        timings["training_still_running_at_load"] = training.proc.poll() is None
        records = training.finish()
        last = records[-1]
        assert wait_for(lambda: d.execute_script("return document.body.dataset.lastStep") == str(last["step"]), 10)
        for key in ("replay_hist", "top_merges", "gate_counts"):
            assert key in last, f"the training record lacks {key}"
        assert any(k.startswith("role_bpb/") for k in last)

        # every series of every chart ends on the value metrics.jsonl has
        shown = d.execute_script(LAST_VALUES)
        by_chart = {}
        for s in shown:
            by_chart.setdefault(s["chart"], set()).add(s["key"])
            value, step = expected_last(records, s["key"])
            assert (float(s["value"]), int(s["step"])) == (value, step), s
        assert {"loss"} <= by_chart["loss"] and {"live_bits_per_byte", "bits_per_byte"} <= by_chart["bpb"]
        assert {"canary_bpb", "canary_start_bpb"} <= by_chart["canary"] and by_chart["roles"]
        # the session memory: the mixture beside the models, the canaries with a copy of it, what it holds
        assert {"memory_live_bpb", "frozen_live_bpb"} <= by_chart["bpb"]
        assert {"canary_mix_bpb", "canary_mix_start_bpb"} <= by_chart["canary"]
        assert by_chart["memory"] == {"memory/history_symbols", "memory/buckets_used", "memory/mb"}
        # the checkpoint box (api/run, polled every 3 s) once it shows the last checkpoint, step 6
        box_js = ("return Object.fromEntries([...document.querySelectorAll('#checkpoint dt')]"
                  ".map(dt => [dt.textContent, dt.nextElementSibling.textContent]))")
        shows_last = "return document.getElementById('ckpt-note').textContent.startsWith('step 6;')"
        assert records[-1]["step"] == 6 and wait_for(lambda: d.execute_script(shows_last), 15)
        box = d.execute_script(box_js)
        assert "live bits/byte (last steps)" in box and "model + memory" in box["live bits/byte (last steps)"], box
        assert f"{records[-1]['memory']['symbols_seen']:,} symbols seen" in box["session memory"], box
        assert {"gate_counts/accepted", "gate_counts/rolled_back", "gate_counts/quarantined",
                "gate_counts/memory_rolled_back"} == by_chart["gate"]
        assert {"promotion_rate", "merge_rate", "steps_per_base_token"} == by_chart["merges"]
        assert by_chart["speed"] == {"tokens_per_s"} and by_chart["replay"] == {"replay_size"}
        counts = d.execute_script("return document.querySelector('[data-chart=surprise] .plot').dataset.counts")
        assert json.loads(counts) == last["replay_hist"]["counts"]
        cells = d.execute_script("return [...document.querySelectorAll('#top-merges tbody tr')]"
                                 ".map(tr => [...tr.cells].map(c => c.textContent))")
        assert cells == [[json.dumps(m["text"], ensure_ascii=False), str(m["uses"]), str(m["age_base_tokens"])]
                         for m in last["top_merges"]]

        # the state tree: the run's own state, then a fork made now
        name = training.ckpt.name
        node = f"#states li[data-name=\"{name}\"]"
        assert wait_for(lambda: d.execute_script(f"return !!document.querySelector('{node}')"), 10)
        StateStore(training.states).fork(name, f"{name}/experiment")
        assert wait_for(lambda: d.execute_script(
            f"return document.querySelector('{node} li[data-name=\"{name}/experiment\"]') !== null"), 10), \
            "the fork did not show under its parent"

        # a new record (a rolled-back step) shows within 2 s
        new = copy.deepcopy(last)
        new.update(step=last["step"] + 1, time=time.time(), loss=1.234567, gate="rolled_back",
                   gate_reason="appended by the test", screened=[])
        new["gate_counts"]["rolled_back"] += 1
        loss_now = "return document.querySelector('[data-chart=loss] tr[data-key=loss] td.value').dataset.step"
        with open(training.ckpt / "metrics.jsonl", "a") as f:
            f.write(json.dumps(new) + "\n")
        t0 = time.monotonic()
        assert wait_for(lambda: d.execute_script(loss_now) == str(new["step"]), 5), "the new record never showed"
        timings["new_point_s"] = round(time.monotonic() - t0, 3)
        assert timings["new_point_s"] < NEW_POINT_S
        value = d.execute_script("return document.querySelector('[data-chart=loss] tr[data-key=loss] td.value')"
                                 ".dataset.value")
        assert float(value) == 1.234567
        first_event = d.execute_script("return [...document.querySelector('#events tbody tr').cells]"
                                       ".map(c => c.textContent)")
        assert first_event[:3] == [str(new["step"]), "rolled back", "appended by the test"]

        # a torn line (a writer mid-line) waits; completed, it shows
        torn = json.dumps({**new, "step": new["step"] + 1, "loss": 1.5, "gate": "accepted"}) + "\n"
        with open(training.ckpt / "metrics.jsonl", "a") as f:
            f.write(torn[:40])
        assert wait_for(lambda: "a line is being written" in d.find_element("id", "status").text, 5)
        assert d.execute_script(loss_now) == str(new["step"])
        with open(training.ckpt / "metrics.jsonl", "a") as f:
            f.write(torn[40:])
        assert wait_for(lambda: d.execute_script(loss_now) == str(new["step"] + 1), 5)

        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        height = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(1280, min(height + 120, 4000))
        assert d.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    (ARTIFACTS / "dashboard-timings.json").write_text(json.dumps(timings, indent=1))
    print("dashboard timings:", timings)


def test_the_data_routes_match_the_finished_run(training):
    records = training.finish()
    with running_dashboard(training.ckpt) as url:
        rows = get_json(url + "/api/metrics")["rows"]
        info = get_json(url + "/api/run")
    by_step = {r["step"]: r for r in records}  # the browser test may have appended records
    assert [r["step"] for r in rows] == sorted(by_step)
    for row in rows:
        rec = by_step[row["step"]]
        for key, v in row.items():
            assert v == field(rec, key), (row["step"], key)
    summary = info["checkpoint"]["summary"]
    assert info["checkpoint"]["step"] == summary["step"] == 6 and summary["train_config"]["merges"] is True
    mem = summary["memory"]
    assert mem["memories"]["_run"]["symbols_seen"] == records[5]["memory"]["symbols_seen"] > 0
    assert mem["bits_per_byte"]["mixture"]["last"] > 0 and "frozen" in mem["bits_per_byte"]
    assert summary["gate"]["counts"]["accepted"] == records[5]["gate_counts"]["accepted"]
    assert info["states"]["folder"] == str(training.states) and info["states"]["origin"] == "the run's --states"
    root = next(n for n in info["states"]["tree"] if n["name"] == training.ckpt.name)
    assert root["this_run"] and root["kind"] == "trained" and root["step"] == 6
