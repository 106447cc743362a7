"""What an `eval` run has finished, on disk in `<out>/progress/`, so that an interrupted run keeps it and a rerun
of the same command continues where it stopped.

    run.json            what the run is: base-model hash, settings, the sessions and their split, canary scores
                        before any session. A rerun with anything different is refused (`CheckpointMismatch`).
    session-0000.npz    one per finished session, in stream order: bits per token of every arm, UTF-8 bytes and
                        role per token, compressor sizes, canary scores after it, cumulative counters
    arms.npz            every arm's learner (trainables, optimizer state, replay buffer, update gate, dynamic
                        tokenizer) and carried state after the last finished session; `done` = sessions in it

The arms are prequential (they train on session k before scoring k+1), so a session file is written first and
the arms after it; a session file beyond `done` (a kill between the two) is recomputed, identically. Every file
is written under a temporary name, fsynced and renamed over the old one: a kill leaves the previous version
whole. Files are owner-only (0600): the replay buffers hold the sessions' tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from rwkvjax.atomic import atomic_write
from rwkvjax.errors import CheckpointMismatch, DataError
from rwkvjax.train.resume import ResumeRule

FORMAT = 1
# settings that may change between a run and its continuation: where it is, how much of it, how it is
# reported; `traces` and `canaries` are compared by content (the sessions, the canary texts), not by path
FREE = ("traces", "out", "max_sessions", "bootstrap", "canaries")
RESUME = ResumeRule(free=FREE, as_flags=True, saved_as="the saved run's")


def as_stored(bits: np.ndarray) -> np.ndarray:
    """Bits per token at the precision a session file keeps (float32: the model's NLL is float32 anyway; half
    the disk of float64), as float64 for the sums, so a continued run's results equal an unbroken run's."""
    return np.asarray(bits, np.float32).astype(np.float64)


def _json_array(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), np.uint8)


def _save_npz(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, meta=_json_array(meta), **arrays))


def _load_npz(path: Path, *, meta_only: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            arrays = {} if meta_only else {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: unreadable eval progress file ({e}); delete it (or its folder) and rerun") from e
    return meta, arrays


def fingerprint(cfg, model_hash: str, model_config: dict, sessions, canary_texts: dict[str, str], *,
                arm_specs: dict | None = None) -> dict:
    """Everything that fixes the results of a run, in JSON form. `arm_specs`: the arms' specs where they are not
    the table's for `cfg.arms` (`prequential._own_specs`); left out when None, as before there were specs."""
    settings = RESUME.settings(dataclasses.asdict(cfg))
    canary = hashlib.sha256(json.dumps(sorted(canary_texts.items())).encode()).hexdigest()[:16]
    sess = [{"sid": s.sid, "heldout": s.heldout,
             "digest": hashlib.sha256(np.ascontiguousarray(s.tokens).tobytes()).hexdigest()[:16]} for s in sessions]
    fp = {"format": FORMAT, "model_hash": model_hash, "model_config": model_config, "settings": settings,
          "canaries": canary, "sessions": sess}
    if arm_specs is not None:
        fp["arm_specs"] = arm_specs
    return json.loads(json.dumps(fp))


def _mismatch(saved: dict, now: dict, cfg) -> str | None:
    """What differs between a saved run and this one, as the start of a message (None: nothing)."""
    if saved.get("format") != now["format"]:
        return f"it was written by another version of eval (format {saved.get('format')}, this one {FORMAT})"
    if saved["model_hash"] != now["model_hash"] or saved["model_config"] != now["model_config"]:
        return (f"it was run with another base model (hash {saved['model_hash']}, --model {cfg.model} is "
                f"{now['model_hash']})")
    changed = RESUME.change(saved["settings"], now["settings"])
    if changed:
        return changed
    if saved.get("arm_specs") != now.get("arm_specs"):
        return "the arms' specs (run_eval's specs) differ from the saved run's"
    if saved["canaries"] != now["canaries"]:
        return "the canary texts (--canaries) differ from the saved run's"
    a, b = saved["sessions"], now["sessions"]
    if len(a) != len(b):
        return f"--traces {cfg.traces} holds {len(b)} sessions, the saved run had {len(a)}"
    for x, y in zip(a, b):
        if x != y:
            return f"session {y['sid']} in --traces {cfg.traces} differs from the saved run's ({x['sid']})"
    return None


class Progress:
    """The `progress/` folder of one report folder."""

    def __init__(self, out: str | os.PathLike):
        self.dir = Path(out) / "progress"
        self.run: dict | None = None

    def open(self, fp: dict, cfg) -> dict | None:
        """The saved run when this folder holds one made with the same fingerprint (None: a new run); raises
        `CheckpointMismatch` naming the first difference otherwise."""
        path = self.dir / "run.json"
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
            why = _mismatch(saved["fingerprint"], fp, cfg)
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{path}: unreadable ({e!r}); delete {self.dir} and rerun") from e
        if why:
            raise CheckpointMismatch(f"{self.dir}: cannot continue this run: {why}; rerun with the saved "
                                     f"setting, or use a new --out (or delete {self.dir} to start over)")
        self.run = saved
        return saved

    def start(self, fp: dict, *, canary_start: dict, canary_bytes: dict, sessions_total: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = {"fingerprint": fp, "canary_start": canary_start, "canary_bytes": canary_bytes,
                    "sessions_total": sessions_total}
        atomic_write(self.dir / "run.json", lambda f: f.write(json.dumps(self.run, indent=1).encode()))

    def load(self, cfg, *, arm_specs: dict | None = None) -> dict | None:
        """The saved run if its settings are `cfg`'s and its arms' specs `arm_specs` (as `fingerprint` takes
        them; the model and sessions are not checked: this is for a report of what is on disk, without a
        model); None otherwise."""
        path = self.dir / "run.json"
        if path.is_file():
            try:
                run = json.loads(path.read_text())
                mine = RESUME.settings(dataclasses.asdict(cfg))
                if run["fingerprint"]["settings"] == mine and run["fingerprint"].get("arm_specs") == arm_specs:
                    self.run = run
            except (OSError, json.JSONDecodeError, KeyError, TypeError):
                return None
        return self.run

    # ----- finished sessions -----
    def done(self) -> int:
        """Sessions whose effect on the arms is saved (0 before the first)."""
        path = self.dir / "arms.npz"
        return int(_load_npz(path, meta_only=True)[0]["done"]) if path.is_file() else 0

    def session_path(self, i: int) -> Path:
        return self.dir / f"session-{i:04d}.npz"

    def write_session(self, i: int, rec: dict) -> None:
        """`rec["bits"]` are float32 values (`as_stored`) in float64 arrays: stored as float32, read back equal."""
        meta = {k: v for k, v in rec.items() if k not in ("roles", "nbytes", "bits")}
        arrays = {"roles": rec["roles"], "nbytes": rec["nbytes"],
                  **{f"bits/{a}": b.astype(np.float32) for a, b in rec["bits"].items()}}
        _save_npz(self.session_path(i), meta, arrays)

    def read_sessions(self, n: int) -> list[dict]:
        out = []
        for i in range(n):
            path = self.session_path(i)
            if not path.is_file():
                raise DataError(f"{path}: missing (arms.npz says {n} sessions are done); delete {self.dir} and rerun")
            meta, arrays = _load_npz(path)
            rec = dict(meta, roles=arrays["roles"], nbytes=arrays["nbytes"],
                       bits={k.split("/", 1)[1]: v.astype(np.float64) for k, v in arrays.items()
                             if k.startswith("bits/")})
            out.append(rec)
        return out

    # ----- the arms' learners -----
    def save_arms(self, done: int, arms: dict) -> None:
        meta, arrays = {"done": done, "arms": {}}, {}
        for name, arm in arms.items():
            host, trees = arm.state_dict()
            meta["arms"][name] = host
            for part, tree in trees.items():
                for j, leaf in enumerate(_leaves(tree)):
                    arrays[f"{name}/{part}/{j}"] = np.asarray(leaf)
        _save_npz(self.dir / "arms.npz", meta, arrays)

    def load_arms(self, arms: dict) -> int:
        """Put the saved learners into freshly built `arms`; returns how many sessions they have seen."""
        path = self.dir / "arms.npz"
        meta, arrays = _load_npz(path)
        if set(meta["arms"]) != set(arms):
            raise CheckpointMismatch(f"{path}: holds arms {sorted(meta['arms'])}, this run has {sorted(arms)}; "
                                     f"delete {self.dir} and rerun")
        for name, arm in arms.items():
            trees = {}
            for part, like in arm.state_dict()[1].items():
                leaves = _leaves(like)
                got = [arrays.get(f"{name}/{part}/{j}") for j in range(len(leaves))]
                if any(g is None or g.shape != np.shape(x) or g.dtype != x.dtype for g, x in zip(got, leaves)):
                    raise CheckpointMismatch(f"{path}: arm {name}'s {part} does not fit this model; delete "
                                             f"{self.dir} and rerun")
                trees[part] = got
            arm.load_state_dict(meta["arms"][name], trees)
        return int(meta["done"])


def _leaves(tree) -> list:
    import jax
    return jax.tree.leaves(tree)
