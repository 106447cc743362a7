"""Following metrics.jsonl: torn lines wait, broken lines are skipped, re-logged steps replace, NaN becomes null."""

from __future__ import annotations

import json
import math

from rwkvjax.serve.dashboard import tail as tail_mod
from rwkvjax.serve.dashboard.tail import MetricsTail, split_record


def _line(step, **kw) -> str:
    return json.dumps({"step": step, "time": 1000.0 + step, "loss": 5.0 - step / 10, **kw}) + "\n"


def test_a_torn_last_line_waits_for_its_end(tmp_path):
    path = tmp_path / "metrics.jsonl"
    full = _line(3, bits_per_byte=7.25)
    path.write_text(_line(1) + _line(2) + full[:17])  # a writer caught mid-line
    t = MetricsTail(path)
    t.poll()
    got = t.since(-1, 0)
    assert [r["step"] for r in got["rows"]] == [1, 2]
    assert got["pending_bytes"] == 17 and got["unreadable"] == 0
    with open(path, "a") as f:
        f.write(full[17:])
    t.poll()
    more = t.since(got["version"], got["next"])
    assert more["version"] == got["version"]
    assert [(r["step"], r["bits_per_byte"]) for r in more["rows"]] == [(3, 7.25)]
    assert more["pending_bytes"] == 0


def test_broken_line_is_skipped_and_a_relogged_step_replaces_what_followed(tmp_path):
    path = tmp_path / "metrics.jsonl"
    # killed mid-line at step 4, resumed from the checkpoint of step 2: steps 3.. are logged again
    path.write_text(_line(1) + _line(2) + _line(3, loss_tag=1) + _line(4)[:20] + _line(3, loss_tag=2))
    t = MetricsTail(path)
    t.poll()
    got = t.since(-1, 0)
    assert got["unreadable"] == 1
    assert [r["step"] for r in got["rows"]] == [1, 2, 3] and got["rows"][-1]["loss_tag"] == 2
    with open(path, "a") as f:
        f.write(_line(4) + _line(2, loss_tag=3))  # another resume, from step 1's checkpoint
    t.poll()
    again = t.since(got["version"], got["next"])
    assert again["version"] != got["version"], "a client holding replaced rows must reload"
    assert [(r["step"], r.get("loss_tag")) for r in again["rows"]] == [(1, None), (2, 3)]


def test_a_replaced_or_truncated_file_is_read_from_its_start(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line(1) + _line(2) + _line(3))
    t = MetricsTail(path)
    t.poll()
    v = t.since(-1, 0)["version"]
    path.write_text(_line(1, loss_tag=9))  # a new run in the same folder
    t.poll()
    got = t.since(v, 3)
    assert got["version"] != v and [(r["step"], r["loss_tag"]) for r in got["rows"]] == [(1, 9)]


def test_a_missing_file_is_no_error(tmp_path):
    t = MetricsTail(tmp_path / "metrics.jsonl")
    t.poll()
    got = t.since(-1, 0)
    assert got["rows"] == [] and got["exists"] is False


def test_records_split_into_scalars_newest_lists_and_gate_events():
    rec = {"step": 7, "time": 1.0, "loss": math.nan, "ood_ratio": float("inf"), "gate": "rolled_back",
           "gate_reason": "canary 8.3 bpb is 2% above its start", "live_sessions": ["s1", "s2"],
           "gate_counts": {"accepted": 5, "rolled_back": 2, "quarantined": 1},
           "screened": [{"session": "s3", "reason": "redundant: 1 of its 90 32-grams are new"}],
           "replay_hist": {"edges": [0.0, 1.0, 2.0], "counts": [3, 4], "unit": "surprise"},
           "top_merges": [{"text": "  ", "uses": 3}]}
    row, bulky, events = split_record(rec)
    assert row["loss"] is None and row["ood_ratio"] is None  # JSON for browsers has no NaN
    assert row["gate_counts/rolled_back"] == 2 and "screened" not in row and "live_sessions" not in row
    assert bulky == {"replay_hist": rec["replay_hist"], "top_merges": rec["top_merges"]}
    assert events == [
        {"step": 7, "decision": "screened", "reason": rec["screened"][0]["reason"], "session": "s3"},
        {"step": 7, "decision": "rolled_back", "reason": rec["gate_reason"], "session": "s1,s2"}]


def test_a_first_load_of_a_long_run_is_thinned_keeping_the_newest(tmp_path, monkeypatch):
    monkeypatch.setattr(tail_mod, "MAX_POINTS", 10)
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(_line(s) for s in range(1, 96)))
    t = MetricsTail(path)
    t.poll()
    got = t.since(-1, 0)
    steps = [r["step"] for r in got["rows"]]
    assert got["stride"] == 10 and steps[-1] == 95 and steps == list(range(5, 96, 10))
    assert got["next"] == 95
    with open(path, "a") as f:
        f.write(_line(96))
    t.poll()
    assert [r["step"] for r in t.since(got["version"], got["next"])["rows"]] == [96]
