"""Markdown + PNG report of a prequential evaluation (`rwkvjax.evaluate.run_eval` results)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rwkvjax.eval.prequential import POSITION_BUCKETS, ROLES


def _bpb(sessions, arm, mask_fn=None) -> tuple[float, float]:
    bits = bytes_ = 0.0
    for s in sessions:
        m = np.ones(len(s["nbytes"]), bool) if mask_fn is None else mask_fn(s)
        bits += float(s["bits"][arm][m].sum())
        bytes_ += float(s["nbytes"][m].sum())
    return (bits / bytes_ if bytes_ else float("nan")), bytes_


def bootstrap_gain(sessions, arm, ref="frozen", n=10_000, seed=0) -> tuple[float, float, float]:
    """Byte-weighted bpb gain (ref - arm) and its paired bootstrap 95% interval over sessions."""
    if not sessions:
        return float("nan"), float("nan"), float("nan")
    bits_ref = np.array([s["bits"][ref].sum() for s in sessions])
    bits_arm = np.array([s["bits"][arm].sum() for s in sessions])
    by = np.array([s["nbytes"].sum() for s in sessions], np.float64)
    gain = (bits_ref.sum() - bits_arm.sum()) / by.sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sessions), (n, len(sessions)))
    g = ((bits_ref[idx] - bits_arm[idx]).sum(1)) / by[idx].sum(1)
    lo, hi = np.quantile(g, [0.025, 0.975])
    return float(gain), float(lo), float(hi)


def summarize(res: dict) -> dict:
    arms = res["arms"]
    train = [s for s in res["sessions"] if not s["heldout"]]
    held = [s for s in res["sessions"] if s["heldout"]]
    out = {"arms": {}, "n_train_sessions": len(train), "n_heldout_sessions": len(held),
           "train_bytes": int(sum(s["nbytes"].sum() for s in train)),
           "heldout_bytes": int(sum(s["nbytes"].sum() for s in held))}
    for a in arms:
        row = {}
        for name, group in (("train", train), ("heldout", held)):
            bpb, _ = _bpb(group, a)
            g, lo, hi = bootstrap_gain(group, a, n=res["config"]["bootstrap"]) if "frozen" in arms else (None,) * 3
            row[name] = {"bpb": bpb, "gain": g, "gain_ci95": [lo, hi]}
        row["by_position"] = {}
        for lo_, hi_ in POSITION_BUCKETS:
            key = f"{lo_}-{hi_ if hi_ else 'end'}"
            pos = lambda s: np.arange(len(s["nbytes"]))
            mask = lambda s, lo_=lo_, hi_=hi_: (pos(s) >= lo_) & ((pos(s) < hi_) if hi_ else True)
            row["by_position"][key] = _bpb(train, a, mask)[0]
        row["by_role"] = {r: _bpb(train, a, lambda s, i=i: s["roles"] == i)[0] for i, r in enumerate(ROLES)}
        canary = res["canary"][a]
        tot_bytes = sum(res["canary_bytes"].values())
        series = [sum(c.values()) / tot_bytes for c in canary] if tot_bytes else []
        row["canary_bpb"] = {"start": series[0] if series else None, "worst": max(series) if series else None,
                             "final": series[-1] if series else None}
        row["timing"] = res["timing"][a]
        out["arms"][a] = row
    return out


def _fmt(x, d=4):
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{d}f}"


def write_eval_report(res: dict, out_dir: str | Path, command: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summ = summarize(res)
    arms = res["arms"]
    (out / "summary.json").write_text(json.dumps(summ, indent=1))

    # cumulative bpb over the training stream
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    train = [s for s in res["sessions"] if not s["heldout"]]
    for a in arms:
        cb = np.cumsum([s["bits"][a].sum() for s in train]) / np.cumsum([s["nbytes"].sum() for s in train])
        axes[0].plot(range(1, len(train) + 1), cb, marker="o", label=a)
        buckets = list(summ["arms"][a]["by_position"].keys())
        if "frozen" in arms:
            axes[1].plot(buckets, [summ["arms"]["frozen"]["by_position"][b] - summ["arms"][a]["by_position"][b]
                                   for b in buckets], marker="o", label=a)
        tot = sum(res["canary_bytes"].values())
        if tot:
            axes[2].plot([sum(c.values()) / tot for c in res["canary"][a]], marker=".", label=a)
    axes[0].set(title="prequential bits/byte (cumulative, training stream)", xlabel="training session")
    axes[1].set(title="gain over frozen by position in session (bits/byte)", xlabel="token position")
    axes[2].set(title="canary bits/byte after each session", xlabel="session")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "prequential.png", dpi=100)
    plt.close(fig)

    cfg = res["config"]
    lines = [
        "# Prequential evaluation of state-tuning",
        "",
        f"Command: `{command}`",
        "",
        f"Sessions: {summ['n_train_sessions']} training ({summ['train_bytes']} bytes), "
        f"{summ['n_heldout_sessions']} held out (every {cfg['k']}-th by start time, {summ['heldout_bytes']} bytes, "
        f"never trained on). Canaries: {', '.join(res['canary_bytes']) or 'none'}. "
        f"Window {cfg['ctx_len']} tokens, {cfg['live_per_step']} live + {cfg['replay_per_step']} replay windows per "
        f"update, at most {cfg['max_windows_per_session']} windows per session, S0 lr {cfg['lr']} -> {cfg['lr_final']}.",
        "",
        "## Bits per byte (gain = frozen - arm; paired bootstrap 95% interval over sessions)",
        "",
        "| arm | train bpb | train gain [95% CI] | held-out bpb | held-out gain [95% CI] | canary start / worst / final |",
        "|---|---|---|---|---|---|",
    ]
    for a in arms:
        r = summ["arms"][a]
        ci = lambda d: f"{_fmt(d['gain'])} [{_fmt(d['gain_ci95'][0])}, {_fmt(d['gain_ci95'][1])}]"
        c = r["canary_bpb"]
        lines.append(f"| {a} | {_fmt(r['train']['bpb'])} | {ci(r['train'])} | {_fmt(r['heldout']['bpb'])} | "
                     f"{ci(r['heldout'])} | {_fmt(c['start'])} / {_fmt(c['worst'])} / {_fmt(c['final'])} |")
    lines += ["", "Verdict (from the 95% intervals of the gain over frozen):", ""]
    for a in arms:
        if a == "frozen" or "frozen" not in arms:
            continue
        for split in ("train", "heldout"):
            lo, hi = summ["arms"][a][split]["gain_ci95"]
            word = ("better than frozen" if lo > 0 else "worse than frozen" if hi < 0
                    else "not distinguishable from frozen")
            lines.append(f"- {a} on the {'training' if split == 'train' else 'held-out'} stream: {word}")
    lines += ["", "## Training stream: bits per byte by position in the session (tokens)", "",
              "| arm | " + " | ".join(summ["arms"][arms[0]]["by_position"]) + " |",
              "|---" * (1 + len(POSITION_BUCKETS)) + "|"]
    for a in arms:
        lines.append(f"| {a} | " + " | ".join(_fmt(v) for v in summ["arms"][a]["by_position"].values()) + " |")
    lines += ["", "## Training stream: bits per byte by role (boilerplate = labels, separators, system reminders)",
              "", "| arm | " + " | ".join(ROLES) + " |", "|---" * (1 + len(ROLES)) + "|"]
    for a in arms:
        lines.append(f"| {a} | " + " | ".join(_fmt(v) for v in summ["arms"][a]["by_role"].values()) + " |")
    lines += ["", "## Cost", "", "| arm | updates | updates/s | train tokens/s | scoring tokens/s |", "|---|---|---|---|---|"]
    for a in arms:
        t = summ["arms"][a]["timing"]
        lines.append(f"| {a} | {t['updates']} | {_fmt(t['updates_per_s'], 2)} | {_fmt(t['train_tokens_per_s'], 0)} | "
                     f"{_fmt(t['score_tokens_per_s'], 0)} |")
    if res.get("merge_stats"):
        m = res["merge_stats"]
        lines += ["", f"Dynamic merges: {m['steps_per_base_token']:.3f} recurrent steps per base token, "
                      f"{m['promotions']} promotions, {m['evictions']} evictions."]
    lines += ["", "![prequential](prequential.png)", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
