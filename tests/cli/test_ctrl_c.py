"""Ctrl-C in a long command: acknowledged on stderr at once ("stopping after step N… (Ctrl-C again to stop now,
keeping step M)"), the run stops within seconds after saving the step it reached (the loop dispatches at most
one step ahead of the device, so nothing long is queued), exit 130; a second Ctrl-C ends it at once, exit 130,
and the newest step saved before it resumes.

Each signal is sent once the child has announced the step it waits for (its progress lines), never after a delay."""

from __future__ import annotations

import re
import signal
import threading
import time

from rwkvjax.train import loop
from rwkvjax.train.loop import Hook, train_loop
from tests.cli.test_progress import pretrain_argv, start

ACK = re.compile(r"^stopping after step (\d+)… "
                 r"\(Ctrl-C again to stop now, (?:keeping step (\d+)|nothing is saved yet)\)$")
# generous for a busy 2-core machine; the figures seen are in the report (about 0.01 s to the acknowledgement,
# about 1 s to the exit)
ACK_S, STOP_S, NOW_S = 10, 60, 10


class _Output:
    """A step's output still computing on the device until something waits for it (`block_until_ready`)."""

    pending: set = set()

    def __init__(self):
        _Output.pending.add(self)

    def block_until_ready(self):
        _Output.pending.discard(self)
        return self


class _AsyncLearner:
    """A learner whose update returns at once, before its work is done (pretraining's, with jax's async dispatch)."""

    def update(self, live):
        return _Output()


class _Watch(Hook):
    def __init__(self):
        self.most = 0

    def after_step(self, info):
        self.most = max(self.most, len(_Output.pending))


def test_dispatch_runs_at_most_one_step_ahead():
    """Unbounded, a stop waits for every queued step before it can save (70 s were seen): the loop waits for the
    output of the step before the one it has just dispatched."""
    _Output.pending.clear()
    watch = _Watch()
    train_loop(_AsyncLearner(), ([1] for _ in range(50)), [watch], step=0, steps=50, stop=threading.Event(),
               describe=lambda s, _: {"step": s})
    assert loop.DISPATCH_AHEAD == 1 and watch.most == 1  # only the step just dispatched: the one before it is done


def _past_a_save(line: str) -> bool:
    """A progress line of step 6 or later: past the save of step 4 (`--save-every 4`)."""
    m = re.match(r"pretrain: step (\d+)/", line)
    return bool(m) and int(m.group(1)) >= 6


def test_ctrl_c_is_acknowledged_at_once_and_stops_within_seconds_keeping_its_step(corpus, tmp_path):
    out = tmp_path / "out"
    p, lines = start(pretrain_argv(corpus, out, 100000, "--progress-every", "0.05"))
    try:
        lines.wait_for(_past_a_save, 600)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        ack = ACK.match(lines.wait_for(lambda x: x.startswith("stopping"), ACK_S))
        assert ack and int(ack.group(2)) >= 4, lines.seen[-5:]
        rest = lines.rest(STOP_S)
        assert p.wait(timeout=STOP_S) == 130
        assert time.monotonic() - t0 < STOP_S
        assert rest[-1] == "interrupted" and not any("Traceback" in x for x in rest), rest
    finally:
        p.kill()
    # the step it named was saved on the way out, and resumes
    step = int(ack.group(1))
    assert (out / "ckpt" / str(step)).is_dir()
    r, again = start(pretrain_argv(corpus, out, step + 1, "--progress-every", "0"))
    again.rest(600)
    assert r.wait(timeout=60) == 0, again.seen[-10:]
    assert f"resumed at step {step}" in r.stdout.read()


def test_a_second_ctrl_c_stops_at_once_and_the_last_saved_step_resumes(corpus, tmp_path):
    out = tmp_path / "out"
    p, lines = start(pretrain_argv(corpus, out, 100000, "--progress-every", "0.05"))
    try:
        lines.wait_for(_past_a_save, 600)
        p.send_signal(signal.SIGINT)
        assert ACK.match(lines.wait_for(lambda x: x.startswith("stopping"), ACK_S)), lines.seen[-5:]
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        now = lines.wait_for(lambda x: x.startswith("stopped now"), NOW_S)
        assert p.wait(timeout=NOW_S) == 130
        assert time.monotonic() - t0 < NOW_S
    finally:
        p.kill()
    m = re.fullmatch(r"stopped now; step (\d+) is the newest saved", now)
    assert m, now
    kept = int(m.group(1))
    assert kept >= 4 and (out / "ckpt" / str(kept)).is_dir()
    # the step it kept is whole: the same command resumes from it (a later step cut short is not used)
    r, again = start(pretrain_argv(corpus, out, kept + 1, "--progress-every", "0"))
    again.rest(600)
    assert r.wait(timeout=60) == 0, again.seen[-10:]
    resumed = re.search(r"resumed at step (\d+)", r.stdout.read())
    assert resumed and int(resumed.group(1)) >= kept
