"""Values a command must refuse with one line naming the flag (issue 17, item 8), quiet pipes, Ctrl-C while
loading, and what a malicious or damaged model file gets."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rwkvjax.cli import COMMANDS, main
from tests.conftest import REPO

REFUSED = [
    (["train", "--ckpt-dir", "X", "--steps", "0"], "--steps"),
    (["train", "--ckpt-dir", "X", "--steps", "-3"], "--steps"),
    (["train", "--ckpt-dir", "X", "--lr", "0"], "--lr"),
    (["train", "--ckpt-dir", "X", "--lr", "nan"], "--lr"),
    (["train", "--ckpt-dir", "X", "--lr", "inf"], "--lr"),
    (["train", "--ckpt-dir", "X", "--clip-norm", "-1"], "--clip-norm"),
    (["train", "--ckpt-dir", "X", "--decay-steps", "0"], "--decay-steps"),
    (["train", "--ckpt-dir", "X", "--save-every", "0"], "--save-every"),
    (["train", "--ckpt-dir", "X", "--log-every", "0"], "--log-every"),
    (["train", "--ckpt-dir", "X", "--keep", "0"], "--keep"),
    (["train", "--ckpt-dir", "X", "--replay-per-step", "-1"], "--replay-per-step"),
    (["train", "--ckpt-dir", "X", "--replay-per-step", "100000000"], "--replay-per-step"),
    (["train", "--ckpt-dir", "X", "--live-per-step", "0"], "--live-per-step"),
    (["train", "--ckpt-dir", "X", "--dtype", "fp16"], "--dtype"),
    (["eval", "--traces", "T", "--out", "O", "--heldout-fraction", "0"], "--heldout-fraction"),
    (["eval", "--traces", "T", "--out", "O", "--heldout-fraction", "1"], "--heldout-fraction"),
    (["pretrain", "--out", "O", "--vocab", "world2"], "--vocab"),
    (["pretrain", "--out", "O", "--batch", "0"], "--batch"),
    (["generate", "--prompt", "x", "--max-tokens", "0"], "--max-tokens"),
    (["generate", "--prompt", "x", "--temperature", "nan"], "--temperature"),
    (["generate", "--prompt", "x", "--top-p", "0"], "--top-p"),
    (["generate", "--prompt", "x", "--top-p", "1.5"], "--top-p"),
]


@pytest.mark.parametrize("argv,flag", REFUSED, ids=[" ".join(a[:1] + a[-2:]) for a, _ in REFUSED])
def test_bad_values_are_refused_naming_the_flag(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "--dtype" in argv or "--vocab" in argv:  # a value outside the flag's choices: argparse refuses it
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert flag in err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir()), "a refused command wrote something"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_every_default_and_choice(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "-h"])
    out = capsys.readouterr().out
    if command == "train":
        assert "(default: 1000)" in out and "{fp32,bf16}" in out and "{global,per-project}" in out
    entries, cur = [], None  # each option's help: its line and the indented lines under it
    for line in out.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            cur = [line]
            entries.append(cur)
        elif cur is not None:
            cur.append(line)
    entries = [" ".join(" ".join(e).split()) for e in entries if not e[0].lstrip().startswith("-h")]
    for e in entries:
        assert "(default:" in e or "(required)" in e, e


def test_demo_with_other_flags_says_which_it_ignores(monkeypatch, capsys):
    import rwkvjax.train.run as run_mod

    class NoRun:
        def __init__(self, cfg, model=None):
            self.cfg = cfg

        def run(self):
            return {"steps": self.cfg.steps}

    monkeypatch.setattr(run_mod, "Trainer", NoRun)
    assert main(["train", "--demo", "--steps", "5", "--lr", "0.5", "--ckpt-dir", "runs/x"]) == 0
    err = capsys.readouterr().err
    assert "ignoring --steps, --lr" in err


def test_closed_stdout_ends_quietly(tmp_path):
    """`cli.py inspect DIR | head`: the reader goes away; no BrokenPipeError traceback."""
    p = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "traces", "--source",
                          str(REPO / "rwkvjax" / "data" / "demo_projects")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err


_RUN_CLI_WHEN_READY = ("import runpy, signal, sys\nsys.argv = sys.argv[1:]\n"
                       "for s in (signal.SIGINT, signal.SIGTERM):\n    signal.signal(s, signal.SIG_IGN)\n"
                       "print('starting cli.py', flush=True)\nrunpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_loading_is_one_line(sig, status):
    """Ctrl-C or SIGTERM during the imports (numpy, jaxlib) and the first compile: the exit status and one
    line, never a traceback, wherever it lands (inside an extension's import, inside a gc callback)."""
    checked = 0
    for delay in (0.1, 0.25, 0.4, 0.6, 0.9, 1.4):
        # the delay counts from when the interpreter is up and about to run cli.py (a line on stdout says so):
        # on a busy machine the interpreter's own start can take longer than the delay. A signal that lands
        # before cli.py's first line is this harness's, ignored (the run then finishes: nothing to check).
        p = subprocess.Popen([sys.executable, "-c", _RUN_CLI_WHEN_READY, str(REPO / "cli.py"), "score", "--model",
                              str(REPO / "rwkvjax" / "data" / "demo_model.safetensors"), str(REPO / "README.md")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline() == "starting cli.py\n"
        time.sleep(delay)
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
        if p.returncode == 0 and not err:  # finished before the signal arrived: nothing to check at this delay
            continue
        checked += 1
        assert p.returncode == status, (delay, err)
        assert err.strip() == ("interrupted" if sig == signal.SIGINT else "terminated"), (delay, err)
    assert checked >= 3


def test_pth_holding_code_is_refused_in_plain_words(tmp_path):
    torch = pytest.importorskip("torch", reason="the `reference` extra (torch) reads .pth files")
    from rwkvjax.errors import CheckpointError
    from rwkvjax.io.formats import load

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"emb.weight": torch.zeros(4, 4), "x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as e:
        load(tmp_path / "evil.pth")
    msg = str(e.value)
    assert "holds code or Python objects" in msg and "refused" in msg
    assert "weights_only" not in msg  # not torch's advice to turn the protection off
    assert not marker.exists()


def test_weights_with_nan_or_inf_are_refused_naming_the_tensor(tmp_path):
    from safetensors.numpy import save_file

    from rwkvjax.errors import CheckpointError
    from rwkvjax.io.formats import load, read_official
    sd, _ = read_official(REPO / "rwkvjax" / "data" / "demo_model.safetensors")
    for bad in (np.nan, np.inf):
        tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}
        tensors["blocks.2.ffn.key.weight"].flat[7] = bad
        save_file(tensors, str(tmp_path / "m.safetensors"))
        with pytest.raises(CheckpointError, match=r"blocks\.2\.ffn\.key\.weight holds 1 NaN/Inf"):
            load(tmp_path / "m.safetensors")
