"""Markdown + PNG report of a prequential evaluation (`rwkvjax.eval.prequential.run_eval` results)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from rwkvjax.atomic import atomic_write
from rwkvjax.eval.config import ARM_SPECS
from rwkvjax.eval.prequential import POSITION_BUCKETS, ROLES

REFERENCE = "frozen"  # the arm every gain is measured against: the base model as it is, read from its own S0
HEADLINE = ((0, 1024), (0, 4096), (0, None))  # first 1K tokens, first 4K, whole session
# a bootstrap over one session has one value: a zero-width "interval" that says nothing about the next session
MIN_VERDICT_SESSIONS = 2


def _key(lo, hi) -> str:
    return f"{lo}-{hi if hi else 'end'}"


def _window(lo, hi):
    return lambda s: (np.arange(len(s["nbytes"])) >= lo) & ((np.arange(len(s["nbytes"])) < hi) if hi else True)


def _bpb(sessions, arm, mask_fn=None) -> tuple[float, float]:
    bits = bytes_ = 0.0
    for s in sessions:
        m = np.ones(len(s["nbytes"]), bool) if mask_fn is None else mask_fn(s)
        bits += float(s["bits"][arm][m].sum())
        bytes_ += float(s["nbytes"][m].sum())
    return (bits / bytes_ if bytes_ else float("nan")), bytes_


def bootstrap_gain(sessions, arm, ref=REFERENCE, n=10_000, seed=0, mask_fn=None) -> tuple[float, float, float]:
    """Byte-weighted bpb gain (ref - arm) over the masked positions and its paired bootstrap 95% interval
    over sessions. With fewer than two sessions there is no interval (nan)."""
    if not sessions:
        return float("nan"), float("nan"), float("nan")
    mask = [np.ones(len(s["nbytes"]), bool) if mask_fn is None else mask_fn(s) for s in sessions]
    bits_ref = np.array([s["bits"][ref][m].sum() for s, m in zip(sessions, mask)])
    bits_arm = np.array([s["bits"][arm][m].sum() for s, m in zip(sessions, mask)])
    by = np.array([s["nbytes"][m].sum() for s, m in zip(sessions, mask)], np.float64)
    gain = (bits_ref.sum() - bits_arm.sum()) / by.sum()
    if len(sessions) < 2:
        return float(gain), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sessions), (n, len(sessions)))
    g = ((bits_ref[idx] - bits_arm[idx]).sum(1)) / by[idx].sum(1)
    lo, hi = np.quantile(g, [0.025, 0.975])
    return float(gain), float(lo), float(hi)


def _interval(lo, hi) -> list[float] | None:
    """None where there is no interval (fewer than two sessions, no frozen arm)."""
    return [lo, hi] if lo is not None and np.isfinite(lo) and np.isfinite(hi) else None


def summarize(res: dict) -> dict:
    arms = res["arms"]
    train = [s for s in res["sessions"] if not s["heldout"]]
    held = [s for s in res["sessions"] if s["heldout"]]
    out = {"arms": {}, "n_train_sessions": len(train), "n_heldout_sessions": len(held),
           "train_bytes": int(sum(s["nbytes"].sum() for s in train)),
           "heldout_bytes": int(sum(s["nbytes"].sum() for s in held)),
           "heldout_sessions": [s["sid"] for s in held], "compressors": {}, "progress": res.get("progress")}
    n_boot = res["config"]["bootstrap"]
    for a in arms:
        row = {}
        for name, group in (("train", train), ("heldout", held)):
            bpb, _ = _bpb(group, a)
            g, lo, hi = bootstrap_gain(group, a, n=n_boot) if REFERENCE in arms else (None,) * 3
            row[name] = {"bpb": bpb, "gain": g, "gain_ci95": _interval(lo, hi)}
        row["heldout_headline"] = {}
        for lo_, hi_ in HEADLINE:
            mask = _window(lo_, hi_)
            bpb = _bpb(held, a, mask)[0]
            g, glo, ghi = bootstrap_gain(held, a, n=n_boot, mask_fn=mask) if REFERENCE in arms else (None,) * 3
            ref = _bpb(held, REFERENCE, mask)[0] if REFERENCE in arms else None
            row["heldout_headline"][_key(lo_, hi_)] = {
                "bpb": bpb, "gain": g, "gain_ci95": _interval(glo, ghi),
                "rel_gain": (g / ref) if g is not None and ref else None}
        for split, group in (("by_position", train), ("heldout_by_position", held)):
            row[split] = {_key(lo_, hi_): _bpb(group, a, _window(lo_, hi_))[0] for lo_, hi_ in POSITION_BUCKETS}
        row["by_role"] = {r: _bpb(train, a, lambda s, i=i: s["roles"] == i)[0] for i, r in enumerate(ROLES)}
        row["heldout_by_role"] = {r: _bpb(held, a, lambda s, i=i: s["roles"] == i)[0] for i, r in enumerate(ROLES)}
        row["heldout_per_session"] = {s["sid"]: float(s["bits"][a].sum() / s["bytes"]) for s in held}
        canary = res["canary"][a]
        tot_bytes = sum(res["canary_bytes"].values())
        series = [sum(c.values()) / tot_bytes for c in canary] if tot_bytes else []
        row["canary_bpb"] = {"start": series[0] if series else None, "worst": max(series) if series else None,
                             "final": series[-1] if series else None}
        row["timing"] = res["timing"][a]
        out["arms"][a] = row
    for c in res.get("compressors", []):
        row = {}
        for name, group in (("train", train), ("heldout", held)):
            nb = sum(s["bytes"] for s in group)
            row[name] = {mode: (sum(s["compressors"][c][mode] for s in group) / nb if nb else float("nan"))
                         for mode in ("alone", "primed")}
        row["heldout_per_session"] = {s["sid"]: {m: s["compressors"][c][m] / s["bytes"] for m in ("alone", "primed")}
                                      for s in held}
        out["compressors"][c] = row
    out["verdict"] = {name: verdict(out, name) for name in ("train", "heldout")}
    out["memory"] = memory_summary(out, held, n_boot)
    return out


# each memory arm of the table against the compressors given the same history: a memory emptied at every session
# against each session alone, a kept one against the compressors primed with every earlier session
MEMORY_VS = tuple((n, "primed" if s.memory_keeps else "alone") for n, s in ARM_SPECS.items() if s.memory_of)
ACROSS_SESSIONS = ("memory", "memory_alone")  # what learning across sessions earns: the first over the second


def memory_summary(summ: dict, held: list, n_boot: int) -> dict | None:
    """The memory arms next to the compressors on the held-out sessions (each arm against the compressors given
    the same history: `memory_alone` against each session alone, the others against the compressors primed with
    every earlier session), and what learning across sessions earns (`memory` over `memory_alone`)."""
    arms = summ["arms"]
    if not any(a in arms for a, _ in MEMORY_VS):
        return None
    out = {"vs_compressors": {}, "across_sessions": None}
    for a, mode in MEMORY_VS:
        if a not in arms:
            continue
        bpb = arms[a]["heldout"]["bpb"]
        row = {"bpb": bpb, "history": mode, "ratio": {}, "per_session_ratio": {}}
        for c, r in summ["compressors"].items():
            row["ratio"][c] = bpb / r["heldout"][mode] if r["heldout"][mode] else None
            row["per_session_ratio"][c] = {
                sid: arms[a]["heldout_per_session"][sid] / v[mode] for sid, v in r["heldout_per_session"].items()}
        out["vs_compressors"][a] = row
    kept, emptied = ACROSS_SESSIONS
    if kept in arms and emptied in arms and held:
        g, lo, hi = bootstrap_gain(held, kept, ref=emptied, n=n_boot)
        ref = arms[emptied]["heldout"]["bpb"]
        out["across_sessions"] = {"gain": g, "gain_ci95": _interval(lo, hi), "rel_gain": g / ref if ref else None}
    return out


def verdict(summ: dict, split: str) -> dict:
    """Each arm against frozen on one stream, from the 95% interval of its gain: better / worse / not
    distinguishable; no verdict (`by_arm` None, `note` says why) from fewer than two sessions or without frozen."""
    n = summ["n_train_sessions" if split == "train" else "n_heldout_sessions"]
    stream = "training" if split == "train" else "held-out"
    if REFERENCE not in summ["arms"]:
        return {"n_sessions": n, "by_arm": None, "note": "no frozen arm to compare with"}
    if n < MIN_VERDICT_SESSIONS:
        return {"n_sessions": n, "by_arm": None,
                "note": f"a verdict needs at least {MIN_VERDICT_SESSIONS} {stream} sessions; this run has {n}"}
    by_arm = {}
    for a, row in summ["arms"].items():
        if a == REFERENCE:
            continue
        lo, hi = row[split]["gain_ci95"]
        by_arm[a] = ("better than frozen" if lo > 0 else "worse than frozen" if hi < 0
                     else "not distinguishable from frozen")
    return {"n_sessions": n, "by_arm": by_arm, "note": None}


def _strict(x):
    """JSON without NaN (not JSON): an undefined number is null."""
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _fmt(x, d=4):
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{d}f}"


def _ci(d) -> str:
    lo, hi = d["gain_ci95"] or (None, None)
    return f"{_fmt(d['gain'])} [{_fmt(lo)}, {_fmt(hi)}]"


def _progress_lines(res: dict) -> list[str]:
    p = res.get("progress")
    if not p or p["scored"] >= p["total"]:
        return []
    how = (f"interrupted after {p['scored']} of {p['total']} sessions" if p["interrupted"]
           else f"limited by --max-sessions {p['max_sessions']}: {p['scored']} of {p['total']} sessions scored")
    return [f"**Partial run: {how}.** The held-out sessions are the latest, so they come last; rerun the same "
            "command (with a larger --max-sessions, or without it) to continue from the finished sessions kept "
            "in `progress/`.", ""]


def _memory_lines(summ: dict) -> list[str]:
    m = summ.get("memory")
    if not m:
        return []
    comps = list(summ["compressors"])
    lines = ["## The session memory against the compressors (held-out sessions, same bytes, same history)", "",
             "`memory_alone`: the frozen model mixed with a memory emptied at every session, next to each compressor "
             "on the session alone. `memory` / `tuned_memory`: the frozen / tuned model mixed with the memory of "
             "every earlier session (held-out ones included, each learned only after it was scored), next to each "
             "compressor primed with the same sessions. Ratio = memory bpb / compressor bpb (below 1: the memory "
             "wins).", "",
             "| arm | history | held-out bpb | " + " | ".join(f"{c} bpb | ratio" for c in comps) + " |",
             "|---" * (3 + 2 * len(comps)) + "|"]
    for a, row in m["vs_compressors"].items():
        cells = [f"{_fmt(summ['compressors'][c]['heldout'][row['history']])} | {_fmt(row['ratio'][c], 3)}"
                 for c in comps]
        lines.append(f"| {a} | {row['history']} | {_fmt(row['bpb'])} | " + " | ".join(cells) + " |")
    lines += ["", "Per held-out session, ratio to each compressor given the same history:", "",
              "| session | " + " | ".join(f"{a} / {c}" for a in m["vs_compressors"] for c in comps) + " |",
              "|---" * (1 + len(comps) * len(m["vs_compressors"])) + "|"]
    sids = summ["heldout_sessions"]
    for sid in sids:
        cells = [_fmt(row["per_session_ratio"][c].get(sid), 3) for row in m["vs_compressors"].values() for c in comps]
        lines.append(f"| {sid[:13]} | " + " | ".join(cells) + " |")
    x = m["across_sessions"]
    if x is not None:
        rel = _fmt(x["rel_gain"] * 100 if x["rel_gain"] is not None else None, 1)
        lines += ["", f"Learning across sessions: `memory` is {_fmt(x['gain'])} bits/byte ({rel}%) better than "
                      f"`memory_alone` on the held-out sessions, paired bootstrap 95% interval "
                      f"{_ci(x).split(' ', 1)[1]}."]
    return lines + [""]


def write_eval_report(res: dict, out_dir: str | Path, command: str) -> Path:
    """The report folder of `run_eval`'s results: summary.json, prequential.png and REPORT.md; returns the
    path of REPORT.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summ = summarize(res)
    write_summary(summ, out)
    write_plot(res, summ, out)
    return write_markdown(res, summ, out, command)


def write_summary(summ: dict, out: Path) -> Path:
    """`summarize`'s figures as strict JSON (an undefined number is null), in `out`/summary.json."""
    path = out / "summary.json"
    strict = json.dumps(_strict(summ), indent=1, allow_nan=False).encode()
    atomic_write(path, lambda f: f.write(strict), private=False)
    return path


def write_plot(res: dict, summ: dict, out: Path) -> Path:
    """`out`/prequential.png: the cumulative bits/byte of the training stream, the held-out gain over frozen by
    position, the canary bits/byte after each session; an arm per line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = res["arms"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    train = [s for s in res["sessions"] if not s["heldout"]]
    for a in arms:
        cb = np.cumsum([s["bits"][a].sum() for s in train]) / np.cumsum([s["nbytes"].sum() for s in train])
        axes[0].plot(range(1, len(train) + 1), cb, marker="o", label=a)
        buckets = list(summ["arms"][a]["heldout_by_position"].keys())
        if REFERENCE in arms:
            axes[1].plot(buckets, [summ["arms"][REFERENCE]["heldout_by_position"][b]
                                   - summ["arms"][a]["heldout_by_position"][b] for b in buckets], marker="o", label=a)
        tot = sum(res["canary_bytes"].values())
        if tot:
            axes[2].plot([sum(c.values()) / tot for c in res["canary"][a]], marker=".", label=a)
    axes[0].set(title="prequential bits/byte (cumulative, training stream)", xlabel="training session")
    axes[1].set(title="held-out gain over frozen by position (bits/byte)", xlabel="token position")
    axes[2].set(title="canary bits/byte after each session", xlabel="session")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    path = out / "prequential.png"
    atomic_write(path, lambda f: f.write(png.getvalue()), private=False)
    return path


def write_markdown(res: dict, summ: dict, out: Path, command: str) -> Path:
    """`out`/REPORT.md: the tables of `summ` (`summarize`), with `command` and the run's settings."""
    arms = res["arms"]
    cfg = res["config"]
    n_held = summ["n_heldout_sessions"]
    lines = [
        "# Prequential evaluation of state-tuning and the session memory",
        "",
        f"Command: `{command}`",
        "",
        *_progress_lines(res),
        f"Sessions: {summ['n_train_sessions']} training ({summ['train_bytes']} bytes), {n_held} held out "
        f"({summ['heldout_bytes']} bytes, never trained on; a memory arm learns each one after scoring it, "
        f"as a compressor primed with it would): the latest {cfg['heldout_fraction']:.0%} of the "
        f"session groups by start time (a subagent transcript goes with its parent session). "
        f"Canaries: {', '.join(res['canary_bytes']) or 'none'}. Window {cfg['ctx_len']} tokens, "
        f"{cfg['live_per_step']} live + {cfg['replay_per_step']} replay windows per update, at most "
        f"{cfg['max_windows_per_session']} windows per session, S0 lr {cfg['lr']} -> {cfg['lr_final']}; "
        f"tuned_tbptt: each session's first {cfg['tbptt_windows'] * cfg['ctx_len']} tokens as one sequence; "
        f"*_reset: back to the start state every {cfg['reset_every']} tokens.",
        "",
    ]
    if REFERENCE in arms:
        lines += ["## Headline: held-out (future) sessions, gain over frozen (bits/byte) [paired bootstrap 95% CI]",
                  "", "| arm | first 1K tokens | rel. | first 4K tokens | rel. | whole session | rel. |",
                  "|---|---|---|---|---|---|---|"]
        for a in arms:
            h = summ["arms"][a]["heldout_headline"]
            cells = [f"{_ci(h[k])} | {_fmt(h[k]['rel_gain'] * 100 if h[k]['rel_gain'] is not None else None, 2)}%"
                     for k in ("0-1024", "0-4096", "0-end")]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _memory_lines(summ)
    lines += ["## Bits per byte next to what a user would try instead (same bytes)", "",
              "Compressors: each session alone, and primed with every earlier session in time order (the cost of "
              "the session after them in one stream: the history the memory arms had).", "",
              "| method | train bpb | train gain [95% CI] | held-out bpb | held-out gain [95% CI] | "
              "canary start / worst / final |", "|---|---|---|---|---|---|"]
    for a in arms:
        r = summ["arms"][a]
        c = r["canary_bpb"]
        lines.append(f"| {a} | {_fmt(r['train']['bpb'])} | {_ci(r['train'])} | {_fmt(r['heldout']['bpb'])} | "
                     f"{_ci(r['heldout'])} | {_fmt(c['start'])} / {_fmt(c['worst'])} / {_fmt(c['final'])} |")
    for c, r in summ["compressors"].items():
        for mode in ("alone", "primed"):
            lines.append(f"| {c} {mode} | {_fmt(r['train'][mode])} | | {_fmt(r['heldout'][mode])} | | |")
    if summ["compressors"]:
        lines += ["", "Held-out sessions one by one (bits/byte):", "",
                  "| session | bytes | " + " | ".join(arms) + " | " +
                  " | ".join(f"{c} alone" for c in summ["compressors"]) + " |",
                  "|---" * (2 + len(arms) + len(summ["compressors"])) + "|"]
        for s in res["sessions"]:
            if not s["heldout"]:
                continue
            cells = [_fmt(summ["arms"][a]["heldout_per_session"][s["sid"]]) for a in arms]
            cells += [_fmt(summ["compressors"][c]["heldout_per_session"][s["sid"]]["alone"])
                      for c in summ["compressors"]]
            lines.append(f"| {s['sid'][:13]} | {s['bytes']} | " + " | ".join(cells) + " |")
    lines += ["", "Verdict (from the 95% intervals of the gain over frozen):", ""]
    for split in ("heldout", "train"):
        v = summ["verdict"][split]
        stream = "training" if split == "train" else "held-out"
        if v["by_arm"] is None:
            lines.append(f"- none on the {stream} stream: {v['note']}.")
            continue
        lines += [f"- {a} on the {stream} stream: {word}" for a, word in v["by_arm"].items()]
    for split, title in (("heldout_by_position", "Held-out sessions"), ("by_position", "Training stream")):
        lines += ["", f"## {title}: bits per byte by position in the session (tokens)", "",
                  "| arm | " + " | ".join(summ["arms"][arms[0]][split]) + " |",
                  "|---" * (1 + len(POSITION_BUCKETS)) + "|"]
        for a in arms:
            lines.append(f"| {a} | " + " | ".join(_fmt(v) for v in summ["arms"][a][split].values()) + " |")
    for split, title in (("heldout_by_role", "Held-out sessions"), ("by_role", "Training stream")):
        lines += ["", f"## {title}: bits per byte by role (boilerplate = labels, separators, system reminders)",
                  "", "| arm | " + " | ".join(ROLES) + " |", "|---" * (1 + len(ROLES)) + "|"]
        for a in arms:
            lines.append(f"| {a} | " + " | ".join(_fmt(v) for v in summ["arms"][a][split].values()) + " |")
    lines += ["", "## Cost", "", "| arm | updates | updates/s | train tokens/s | scoring tokens/s |", "|---|---|---|---|---|"]
    for a in arms:
        t = summ["arms"][a]["timing"]
        lines.append(f"| {a} | {t['updates']} | {_fmt(t['updates_per_s'], 2)} | {_fmt(t['train_tokens_per_s'], 0)} | "
                     f"{_fmt(t['score_tokens_per_s'], 0)} |")
    secs = (res.get("progress") or {}).get("seconds") or []
    if secs:
        lines += ["", f"Wall time per session, every arm above (scoring, training, canaries, compressors): mean "
                      f"{np.mean(secs):.1f} s, longest {max(secs):.1f} s over {len(secs)} sessions of mean "
                      f"{np.mean([s['bytes'] for s in res['sessions']]) / 1000:.1f} kB (this run's machine; a "
                      f"continued run counts each session once)."]
    if res.get("merge_stats"):
        m = res["merge_stats"]
        lines += ["", f"Dynamic merges: {m['steps_per_base_token']:.3f} recurrent steps per base token, "
                      f"{m['promotions']} promotions, {m['evictions']} evictions."]
    lines += ["", "![prequential](prequential.png)", ""]
    path = out / "REPORT.md"
    atomic_write(path, lambda f: f.write("\n".join(lines).encode()), private=False)
    return path
