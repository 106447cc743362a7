"""Issue 25 item 3: `inspect` previewed private-key material from a checkpoint's replay buffer. Its previews pass
through the redactor (and mask random-looking runs no rule names) whatever the buffer holds, so they show
markers, never the raw text."""

from __future__ import annotations

import json
import random
import string

import numpy as np
import pytest

from rwkvjax.cli import main
from rwkvjax.eval.inspect import PREVIEW_CHARS, preview
from rwkvjax.io.checkpoint import TrainCheckpointer
from rwkvjax.train.replay import ReplayBuffer, ReplaySettings

_rng = random.Random(3)
_b64 = string.ascii_letters + string.digits + "+/"
KEY_LINES = ["".join(_rng.choice(_b64) for _ in range(64)) for _ in range(3)]
PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(KEY_LINES) + "\n-----END RSA PRIVATE KEY-----\n"
API_KEY = "sk-ant-api03-" + "".join(_rng.choice(string.ascii_letters + string.digits) for _ in range(48))
# a key hard-wrapped by `fold -w 60` whose BEGIN line fell into another window: no rule's shape, random text
FOLDED = "\n".join(KEY_LINES[1:]) + "\n"

TEXTS = [f"cat ~/.ssh/id_rsa\n{PEM}done", f"client = Anthropic(api_key='{API_KEY}')\n", f"{FOLDED}and more",
         "def ordinary():\n    return 1\n"]
SECRETS = [*KEY_LINES, API_KEY, *(x[:24] for x in KEY_LINES), API_KEY[-24:]]


def _checkpoint(path, texts):
    """A training checkpoint whose replay buffer holds `texts` raw, as a version that stored them unredacted did."""
    buf = ReplayBuffer(ReplaySettings(capacity=8))
    for k, t in enumerate(texts):
        buf.add([k + 1, k + 2], 10.0 - k, text=t)
    host = {"step": 1, "tokens_seen": 8, "bytes_seen": 8, "base_model": "m.safetensors", "base_hash": "0" * 16,
            "model_config": {}, "train_config": {}, "replay": buf.to_dict(), "ingest": {}, "cursor": "{}",
            "ready": []}
    with TrainCheckpointer(path, async_save=False) as ck:
        ck.save_items(1, {"trainable": {"wkv": np.zeros((1, 1, 2, 2), np.float32)}}, host)
    return path


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_a_preview_is_redacted_before_it_is_cut():
    got = preview(TEXTS[0])
    assert got.startswith("cat ~/.ssh/id_rsa\n[REDACTED:") and not _leaks(got)
    assert preview(TEXTS[3]) == TEXTS[3] and preview(None) == ""
    assert len(preview("x " * 500)) == PREVIEW_CHARS


@pytest.mark.parametrize("as_json", [False, True])
def test_inspect_shows_markers_not_the_keys_a_replay_buffer_holds(tmp_path, capsys, as_json):
    ck = _checkpoint(tmp_path / "ck", TEXTS)
    assert main(["inspect", "--checkpoint", str(ck), *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    previews = (json.loads(out)["replay"]["top"] if as_json else
                [line for line in out.splitlines() if line.startswith("  [")])
    assert len(previews) == len(TEXTS)
    assert out.count("[REDACTED:") >= 3, out
    assert not _leaks(out), out
    assert "def ordinary()" in out  # ordinary text is shown as it was
