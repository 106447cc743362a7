"""What a training checkpoint learned: `inspect` and `merge-stats` reports (no model needed)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ingest.redact import MARK, Redactor
from rwkvjax.errors import DataError
from rwkvjax.io.checkpoint import TrainCheckpointer
from rwkvjax.train.replay import high_entropy_runs

log = logging.getLogger(__name__)


def read_metrics(ckpt_dir: str | Path) -> list[dict]:
    """metrics.jsonl rows. A line that is not a JSON object (a write cut short by a kill, then appended to
    by older versions) is skipped with one warning: the rest of the run's record stays readable."""
    path = Path(ckpt_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows, bad = [], []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        elif line.strip():
            bad.append(i + 1)
    if bad:
        log.warning("%s: skipped %d torn or unreadable line%s (line %s)", path, len(bad), "s" * (len(bad) > 1),
                    ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else ""))
    # a resumed run re-logs steps after the last checkpoint: keep the latest record per step
    by_step = {r["step"]: r for r in rows}
    return [by_step[s] for s in sorted(by_step)]


PREVIEW_CHARS = 160


def preview(text: str | None, redactor: Redactor | None = None) -> str:
    """The start of a replay window's text as `inspect` shows it: redacted again, whatever the buffer holds (a
    checkpoint written before a redaction rule existed, or by an older version, can hold raw key material), and
    random-looking runs that no rule names masked too; then cut to PREVIEW_CHARS. Redacting before cutting lets
    the rules see the whole secret (a key cut in half would no longer match)."""
    text = (redactor or Redactor())(text or "")
    spans = high_entropy_runs(text)
    for s, e in reversed(spans):
        text = text[:s] + MARK.format("high-entropy") + text[e:]
    return text[:PREVIEW_CHARS]


def _finite_mean(rows, key):
    """The mean of the finite values (a metrics file may hold NaN for a step that had no figure)."""
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


def _mean(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def inspect(ckpt_dir: str | Path, last: int = 20) -> dict:
    with TrainCheckpointer(ckpt_dir, read_only=True) as ck:
        _, host, tr = ck.restore_newest_host_and_arrays()
        kept = ck.all_steps()
    S0 = np.asarray(tr["wkv"])
    rows = read_metrics(ckpt_dir)
    rep = host["replay"]
    prio = np.asarray(rep["priority"], np.float64)
    order = np.argsort(-prio)[:5] if len(prio) else []
    redactor = Redactor()
    return {
        "ckpt_dir": str(ckpt_dir), "step": host["step"], "checkpoints": kept,
        "tokens_seen": host["tokens_seen"], "bytes_seen": host["bytes_seen"],
        "base_model": host["base_model"], "base_hash": host["base_hash"], "model_config": host["model_config"],
        "train_config": host["train_config"],
        "loss": {"first": _mean(rows[:last], "loss"), "last": _mean(rows[-last:], "loss"),
                 "overall": _mean(rows, "loss")},
        "bits_per_byte": {"first": _mean(rows[:last], "live_bits_per_byte"),
                          "last": _mean(rows[-last:], "live_bits_per_byte"),
                          "overall": _mean(rows, "live_bits_per_byte")},
        "curve": [{"step": r["step"], "loss": r["loss"], "bits_per_byte": r.get("live_bits_per_byte")}
                  for r in rows[-last:]],
        "state_norms": {"per_layer": np.linalg.norm(S0.reshape(S0.shape[0], -1), axis=1).round(4).tolist(),
                        "total": float(np.linalg.norm(S0))},
        "shift_trained": tr.get("att_shift") is not None,
        "hypernet": tr.get("hyper") is not None,
        "replay": {"size": len(prio), "capacity": rep["settings"]["capacity"],
                   "priority_rule": rep["settings"]["priority"], "counters": rep["counters"],
                   "priority_quantiles": dict(zip(["min", "p25", "median", "p75", "max"],
                                                  np.quantile(prio, [0, .25, .5, .75, 1]).round(4).tolist()))
                   if len(prio) else {},
                   "top": [{"priority": round(float(prio[i]), 4),
                            "preview": preview(rep["texts"][i], redactor)} for i in order]},
        "gate": _gate_summary(host.get("gate"), rows, host_has_memory=bool(host.get("memory"))),
        "learning": learning_status(rows, host["train_config"], host.get("lr_backoff")),
        "projects": None if not host.get("projects") else {
            p: {"updates": host["projects"]["updates"][p], "replay": len(host["projects"]["replay"][p]["windows"])}
            for p in host["projects"]["replay"]},
        "ingest": host["ingest"],
        "cursor_sessions": len(json.loads(host["cursor"]).get("sessions", {})),
        "pending_windows": len(host["ready"]),
        "memory": _memory_summary(host, rows, last),
    }


# (figure, metrics field) of the live windows, in the order they are shown
MEMORY_FIGURES = (("mixture", "memory_live_bpb"), ("tuned", "live_bits_per_byte"), ("frozen", "frozen_live_bpb"),
                  ("model_in_mixture", "memory_lm_bpb"), ("global_mixture", "memory_global_live_bpb"))


def _memory_summary(host: dict, rows: list[dict], last: int) -> dict | None:
    """The session memories (size, what they hold) and bits/byte of the live windows: the mixture of the tuned
    start state's model and the memory, the tuned model alone, the frozen model (with the update gate on), over
    the steps that have the mixture's figure. None for a run without a memory."""
    metas = host.get("memory")
    if not metas:
        return None
    run = host.get("memory_run") or {}
    rows = [r for r in rows if r.get("memory_live_bpb") is not None]
    bpb = {}
    for name, key in MEMORY_FIGURES:
        if any(r.get(key) is not None for r in rows):
            bpb[name] = {"first": _finite_mean(rows[:last], key), "last": _finite_mean(rows[-last:], key),
                         "overall": _finite_mean(rows, key)}
    stats = run.get("stats") or {}
    return {"current": run.get("current"), "settings": next(iter(metas.values()))["settings"],
            "memories": {n: stats.get(n) for n in metas}, "screened_windows":
                sum(len(r.get("memory_screened") or []) for r in rows),
            "bits_per_byte": bpb, "steps": len(rows), "merges": bool(host["train_config"].get("merges"))}


def _gate_summary(gate: dict | None, rows: list[dict], last: int = 5, host_has_memory: bool = False) -> dict | None:
    """Decisions of the update gate: counts (screened windows count as quarantined; `memory_rolled_back`: steps
    whose update stood but whose learning by the session memory was undone), the last reasons."""
    if gate is None:
        return None
    reasons = []
    for r in rows:
        for w in r.get("screened") or []:
            reasons.append({"step": r["step"], "decision": "quarantined (screened)", "reason": w["reason"],
                            "session": w["session"]})
        if r.get("gate") in ("rolled_back", "quarantined"):
            reasons.append({"step": r["step"], "decision": r["gate"], "reason": r.get("gate_reason"),
                            "session": ",".join(r.get("live_sessions") or [])})
        if r.get("memory_gate") == "rolled_back":
            reasons.append({"step": r["step"], "decision": "memory learning undone",
                            "reason": r.get("memory_gate_reason"), "session": ",".join(r.get("live_sessions") or [])})
    steps = sum(gate["counts"].get(k, 0) for k in ("accepted", "rolled_back")) + \
        sum(1 for r in rows if r.get("gate") == "quarantined")
    keys = ("accepted", "rolled_back", "quarantined") + (("memory_rolled_back",) if host_has_memory else ())
    return {"counts": {k: gate["counts"].get(k, 0) for k in keys},
            "screened_windows": sum(len(r.get("screened") or []) for r in rows),
            "canary_start_bpb": gate.get("start_canary"), "canary_last_bpb": gate.get("last_canary"),
            "probe_seconds_total": gate.get("probe_seconds"),
            "probe_seconds_per_step": gate.get("probe_seconds", 0) / steps if steps else None,
            "last_reasons": reasons[-last:]}


# the train setting's default, for a run from before it was recorded
STALL_AFTER = 8


def rollback_streak(rows: list[dict]) -> int:
    """Updates rolled back in a row at the newest record: the trainer's count when it records one, else the
    trailing rolled-back records (quarantined ones neither end nor extend a streak)."""
    if rows and isinstance(rows[-1].get("rollback_streak"), int):
        return rows[-1]["rollback_streak"]
    n = 0
    for r in reversed(rows):
        if r.get("gate") == "accepted":
            break
        n += r.get("gate") == "rolled_back"
    return n


def learning_status(rows: list[dict], train_config: dict, backoff: dict | None) -> dict | None:
    """Whether the run still learns: "stalled" when the last `stall_warn_after` updates were all rolled back by
    the update gate (a run can go on for hours so, learning nothing), with the learning rate the backoff left.
    None for a run without the gate."""
    if not train_config.get("gate"):
        return None
    after = train_config.get("stall_warn_after", STALL_AFTER)
    streak = rollback_streak(rows)
    scale = (backoff or {}).get("scale", 1.0)
    lr = train_config["lr"] * scale
    stalled = streak >= after
    text = (f"stalled: the last {streak} updates were all rolled back by the update gate (learning rate now "
            f"{lr:.4g}); lower --lr or raise --gate-canary-rel" if stalled else
            f"learning: {streak} updates rolled back in a row (stalled at {after}); learning rate {lr:.4g}")
    return {"stalled": stalled, "rollback_streak": streak, "stall_after": after, "lr_scale": scale, "lr": lr,
            "backoffs": [r["lr_backoff"] for r in rows if r.get("lr_backoff")][-5:], "text": text}


def merge_stats(ckpt_dir: str | Path, top: int = 25) -> dict:
    from rwkvjax.merges.dyntok import DynamicTokenizer
    from rwkvjax.text.tokenizer import for_vocab
    with TrainCheckpointer(ckpt_dir, read_only=True) as ck:
        host = ck.restore_host()
    if host.get("dyntok") is None:
        raise DataError(f"{ckpt_dir}: this run was trained with merges off (--no-merges); no merge statistics")
    tok = for_vocab(host["model_config"]["vocab_size"])
    dt = DynamicTokenizer.from_state_dict(host["dyntok"], tok.decode_bytes)
    st = dt.stats(top=top)
    rows = read_metrics(ckpt_dir)
    st["compression_over_time"] = [{"step": r["step"], "steps_per_base_token": r["steps_per_base_token"]}
                                   for r in rows if "steps_per_base_token" in r]
    return st


def plot(ckpt_dir: str | Path, out: str | Path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = read_metrics(ckpt_dir)
    if not rows:
        raise DataError(f"{ckpt_dir}: metrics.jsonl is empty or missing; nothing to plot")
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(steps, [r["loss"] for r in rows])
    axes[0].set(title="training loss (nats/unit)", xlabel="step")
    axes[1].plot(steps, [r.get("live_bits_per_byte") or np.nan for r in rows], label="tuned model")
    for key, label in (("memory_live_bpb", "model + session memory"), ("frozen_live_bpb", "frozen model")):
        if any(r.get(key) is not None for r in rows):
            axes[1].plot(steps, [r.get(key) or np.nan for r in rows], label=label)
    axes[1].legend()
    axes[1].set(title="live bits per byte (before update)", xlabel="step")
    axes[2].plot(steps, [r.get("steps_per_base_token", 1.0) for r in rows])
    axes[2].set(title="recurrent steps per base token", xlabel="step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return str(out)


def _format_memory(m: dict, f) -> list[str]:
    out = []
    for name, st in m["memories"].items():
        label = "session memory" + ("" if name == "_run" else f" of project {name}")
        if st is None:
            out.append(f"{label}: no statistics in this checkpoint")
            continue
        out.append(f"{label}: {st['mb']:.1f} MB (bound {st['memory_mb']:g}), {st['symbols_seen']:,} symbols seen, "
                   f"history {st['history_symbols']:,} of {st['history_capacity']:,}, context buckets "
                   f"{st['buckets_used']:,} of {st['buckets']:,}")
    if m["screened_windows"]:
        out.append(f"  {m['screened_windows']} windows skipped by the memory's flood screen (--no-gate)")
    names = {"mixture": "model + memory", "tuned": "tuned model", "frozen": "frozen model",
             "model_in_mixture": "model in the mixture (base tokens)", "global_mixture": "model + global memory"}
    # the model inside the mixture reads base tokens: with merges off that is the tuned model's figure again
    shown = [k for k in m["bits_per_byte"] if k != "model_in_mixture" or m["merges"]]
    for key in ("first", "last", "overall"):
        out.append(f"  live bits/byte {key} (over {m['steps']} steps): "
                   + " · ".join(f"{names[k]} {f(m['bits_per_byte'][k][key])}" for k in shown))
    return out


def format_inspect(r: dict) -> str:
    f = lambda x: "n/a" if x is None else f"{x:.4f}"
    lines = [
        f"checkpoint {r['ckpt_dir']}  step {r['step']}  (kept: {r['checkpoints']})",
        f"base model {r['base_model']}  hash {r['base_hash']}",
        f"tokens seen {r['tokens_seen']}  bytes seen {r['bytes_seen']}",
        f"loss first/last/overall {f(r['loss']['first'])} / {f(r['loss']['last'])} / {f(r['loss']['overall'])}",
        f"bits/byte first/last/overall {f(r['bits_per_byte']['first'])} / {f(r['bits_per_byte']['last'])} / "
        f"{f(r['bits_per_byte']['overall'])}",
        f"S0 norm total {r['state_norms']['total']:.4f}; per layer {r['state_norms']['per_layer']}",
        f"replay {r['replay']['size']}/{r['replay']['capacity']} ({r['replay']['priority_rule']}), "
        f"priority quantiles {r['replay']['priority_quantiles']}, counters {r['replay']['counters']}",
    ]
    for t in r["replay"]["top"]:
        lines.append(f"  [{t['priority']}] {t['preview']!r}")
    g = r.get("gate")
    if g is not None:
        c = g["counts"]
        lines.append(f"gate: accepted {c['accepted']}  rolled back {c['rolled_back']}  quarantined "
                     f"{c['quarantined']} (of which {g['screened_windows']} windows screened before training); "
                     f"canary {f(g['canary_start_bpb'])} -> {f(g['canary_last_bpb'])} bpb; probe "
                     f"{f(g['probe_seconds_per_step'])} s/step")
        if "memory_rolled_back" in c:
            lines.append(f"  session memory: its learning undone in {c['memory_rolled_back']} accepted steps (the "
                         "canaries read with it past the bound)")
        for x in g["last_reasons"]:
            lines.append(f"  step {x['step']} {x['decision']}: {x['reason']}")
    s = r.get("learning")
    if s is not None:
        lines.append(s["text"])
        for b in s["backoffs"]:
            lines.append(f"  backoff at {b}")
    for p, v in (r.get("projects") or {}).items():
        lines.append(f"project {p}: {v['updates']} updates, {v['replay']} replay windows")
    m = r.get("memory")
    if m is not None:
        lines += _format_memory(m, f)
    lines.append(f"ingestion {r['ingest']}  sessions in cursor {r['cursor_sessions']}  "
                 f"windows pending {r['pending_windows']}")
    return "\n".join(lines)
