"""Async event stream: the ccsniff bridge as a supervised child process, or a pure-Python file read.

    async with TraceStream(mode="live", cursor=Cursor.from_json(saved)) as stream:
        async for ev in stream:
            ...                        # stream.cursor covers exactly the events returned so far
            save(stream.cursor.to_json())

- `mode="replay"`: read the history, then stop. `mode="live"`: read the history, then follow appends.
- Source: the projects folder (`projects_dir`, else $CLAUDE_PROJECTS_DIR, else ~/.claude/projects) through
  ccsniff, or explicit `paths` (.jsonl files or folders): replayed by the Python reader (same records as
  the bridge; `reader="ccsniff"` forces the bridge), followed live by the bridge.
- Bounded queue: the producer waits when the consumer lags; the child then blocks on its stdout pipe.
- The child's stderr is drained into the log. If the child dies before it is done it is restarted with
  exponential backoff; the new child reads the history again and the producer-side cursor drops what was
  already queued, so nothing is lost or repeated.

The child's lifetime: only this process decides it, and the child never outlives it.
- The child runs in its own process group, so a terminal's Ctrl-C (SIGINT to the foreground group) or a
  signal to the trainer's group reaches only the parent, which then closes the stream (below). Were the
  child in the group, it would die of the same signal and look like a crash to restart.
- Its stdin is a pipe that the parent never writes. `aclose()` closes it and the bridge exits (SIGTERM,
  then SIGKILL, only if it does not). When the parent dies by any means, SIGKILL included, the kernel
  closes the pipe and the bridge exits as well; the bridge also exits when its parent pid changes, in case
  the pipe's write end leaked into another process (e.g. a fork of the parent). No PR_SET_PDEATHSIG: it
  needs code between fork and exec (preexec_fn, unsafe in a threaded parent like the trainer) and fires
  when the forking thread ends, not the process.
- No restart once `aclose()` has begun, and none when the child was stopped by SIGINT or SIGTERM (exit
  status -2/-15, or 130/143 from the bridge's handlers): someone signalled it on purpose, e.g. a service
  manager stopping the whole unit, so the stream ends (with a warning) rather than fighting the signal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import AsyncIterator, Sequence

from ingest.cursor import Cursor
from ingest.errors import InputError, MissingInput
from ingest.events import Event
from ingest.normalize import Normalizer
from ingest.records import expand, read_records
from ingest.redact import Redactor

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BRIDGE = REPO / "ingest" / "bridge" / "ccsniff_bridge.mjs"
# The pipe reader's buffer: asyncio stops reading the child's stdout beyond twice this, so a slow consumer
# stalls the child (its writes block). Records may be far longer (transcript lines over 10 MB are normal):
# _lines assembles them from chunks.
_PIPE_CHUNK = 1 << 20


def projects_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("CLAUDE_PROJECTS_DIR")
    return Path(env) if env else Path.home() / ".claude" / "projects"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise MissingInput("node (>= 18) is not on PATH; install Node.js, then run `npm ci` in the repo root")
    if not (REPO / "node_modules" / "ccsniff" / "package.json").is_file():
        raise MissingInput(f"ccsniff is not installed in {REPO / 'node_modules'}; run `npm ci` in {REPO}")
    return node


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Complete newline-terminated lines of any length; an unterminated tail (killed child) is dropped."""
    buf = bytearray()
    scanned = 0
    while True:
        chunk = await stream.read(_PIPE_CHUNK)
        if not chunk:
            return
        buf += chunk
        start = 0
        while (i := buf.find(b"\n", max(start, scanned))) >= 0:
            yield bytes(buf[start:i])
            start = i + 1
        del buf[:start]
        scanned = len(buf)


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(_PIPE_CHUNK):
        pass


class _Done:
    pass


_DONE = _Done()

# Exit statuses of a child stopped on purpose by a signal: killed by it, or the bridge's handler (128 + n).
_STOP_STATUS = {-signal.SIGINT: "SIGINT", -signal.SIGTERM: "SIGTERM",
                128 + signal.SIGINT: "SIGINT", 128 + signal.SIGTERM: "SIGTERM"}


class TraceStream:
    def __init__(self, mode: str = "replay", *, projects: str | os.PathLike | None = None,
                 paths: Sequence[str | os.PathLike] | None = None, cursor: Cursor | None = None,
                 reader: str = "auto", queue_size: int = 1024, redactor: Redactor | None = None,
                 max_restarts: int = 20, backoff: tuple[float, float] = (0.25, 10.0)):
        if mode not in ("replay", "live"):
            raise InputError(f"trace mode must be 'replay' or 'live', got {mode!r}")
        if reader not in ("auto", "ccsniff", "python"):
            raise InputError(f"trace reader must be auto, ccsniff or python, got {reader!r}")
        if reader == "python" and mode == "live":
            raise InputError("live mode follows files through ccsniff; use reader='auto' or 'ccsniff'")
        self.mode = mode
        self.files = expand(paths) if paths else None
        self.projects = None if paths else projects_dir(projects)
        if self.projects is not None and not self.projects.is_dir():
            raise MissingInput(f"Claude Code projects folder {self.projects} does not exist "
                                    "(set CLAUDE_PROJECTS_DIR or pass explicit transcript paths)")
        self.use_bridge = reader == "ccsniff" or mode == "live" or self.files is None
        self.cursor = cursor.copy() if cursor else Cursor()   # what the consumer has received
        self._queued = self.cursor.copy()                      # what the producer has queued
        self._redactor = redactor or Redactor()
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.max_restarts, self.backoff = max_restarts, backoff
        self.restarts = 0
        self.normalizer = Normalizer(self._redactor)
        self._task: asyncio.Task | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._closing = False   # aclose() has begun: a child that exits now is not restarted
        self._stopped_by: str | None = None   # the signal that stopped the last child on purpose
        self.caught_up = asyncio.Event()

    @property
    def metrics(self) -> Counter:
        c = Counter(self.normalizer.counts)
        c["child_restarts"] = self.restarts
        c["cursor_mismatch"] = self._queued.mismatches
        for rule, n in self._redactor.counts.items():
            c[f"redacted:{rule}"] = n
        return c

    async def __aenter__(self) -> "TraceStream":
        self._task = asyncio.create_task(self._produce())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._task is None:
            self._task = asyncio.create_task(self._produce())
        item = await self._queue.get()
        if item is _DONE:
            self._queue.put_nowait(_DONE)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)  # every later call fails the same way instead of hanging
            raise item
        self.cursor.admit(item)
        return item

    async def aclose(self) -> None:
        self._closing = True
        try:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                try:
                    await self._task
                except (asyncio.CancelledError, Exception):
                    pass
        finally:  # even when aclose() itself is cancelled: the child must not outlive the stream
            await self._stop_child()
            self.normalizer.flush_warnings()  # bad lines at the very end of a live file are reported too

    # producer side -------------------------------------------------------------------------------
    async def _emit(self, rec: dict) -> None:
        if rec.get("k") == "caught_up":
            self.caught_up.set()
        for ev in self.normalizer.feed(rec):
            if self._queued.admit(ev):
                await self._queue.put(ev)

    async def _produce(self) -> None:
        try:
            if self.use_bridge:
                await self._supervise()
            else:
                for i, rec in enumerate(read_records(self.files)):
                    await self._emit(rec)
                    if i % 256 == 0:
                        await asyncio.sleep(0)
            await self._queue.put(_DONE)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # surfaced to the consumer instead of dying silently in a task
            await self._queue.put(e)

    def _argv(self) -> list[str]:
        argv = [_node(), str(BRIDGE), "--mode", self.mode, "--supervised"]
        if self.files is not None:
            argv += ["--files", *map(str, self.files)]
        else:
            argv += ["--dir", str(self.projects)]
        return argv

    async def _supervise(self) -> None:
        delay = self.backoff[0]
        loop = asyncio.get_running_loop()
        while True:
            # The new child reads the history from the start: its counters replace the old ones.
            self.normalizer = Normalizer(self._redactor)
            self._redactor.counts.clear()
            started = loop.time()
            finished = await self._run_child()
            if finished or self._closing:
                return
            if self._stopped_by is not None:
                log.warning("ccsniff bridge was stopped by %s from outside; the trace stream ends here",
                            self._stopped_by)
                return
            if loop.time() - started > 60:
                delay = self.backoff[0]  # it ran fine for a while: this is a fresh failure, not a crash loop
            if self.restarts >= self.max_restarts:
                raise RuntimeError(f"ccsniff bridge died {self.restarts + 1} times; giving up (see the log for its stderr)")
            self.restarts += 1
            log.warning("ccsniff bridge exited early; restart %d in %.2fs", self.restarts, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _run_child(self) -> bool:
        """Run one bridge child to its end; True when it finished its job (replay done)."""
        env = dict(os.environ)
        if self.projects is not None:
            env["CLAUDE_PROJECTS_DIR"] = str(self.projects)
        self._stopped_by = None
        self._proc = proc = await asyncio.create_subprocess_exec(
            *self._argv(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, limit=_PIPE_CHUNK, cwd=str(REPO), process_group=0)
        drain = asyncio.create_task(self._drain(proc.stderr))
        caught_up = False
        try:
            async for line in _lines(proc.stdout):
                try:
                    rec = json.loads(line)
                except ValueError:
                    self.normalizer.counts["bad_bridge_record"] += 1
                    log.error("ccsniff bridge printed a non-JSON record: %.200r", line)
                    continue
                caught_up = caught_up or rec.get("k") == "caught_up"
                await self._emit(rec)
            rc = await proc.wait()
            await asyncio.wait_for(drain, timeout=5)
        finally:
            if not drain.done():
                drain.cancel()
        self._proc = None
        proc.stdin.close()
        self._stopped_by = _STOP_STATUS.get(rc)
        if rc != 0 and self._stopped_by is None:
            log.warning("ccsniff bridge exit status %s", rc)
        return self.mode == "replay" and rc == 0 and caught_up

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        async for line in _lines(stream):
            log.warning("ccsniff bridge: %.2000s", line.decode("utf-8", "replace").rstrip())

    async def _stop_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # Keep reading (and discarding) its stdout: a child blocked writing to a full pipe cannot act on
        # SIGTERM, and asyncio reports the exit only once the pipes are drained and closed.
        discard = asyncio.create_task(_discard(proc.stdout))
        try:
            proc.stdin.close()  # the bridge's cue to exit (its stdin ends)
            for escalate in (lambda: proc.send_signal(signal.SIGTERM), proc.kill):
                try:
                    await asyncio.wait_for(proc.wait(), timeout=3)
                    return
                except asyncio.TimeoutError:
                    if proc.returncode is None:
                        escalate()
            await proc.wait()
        finally:
            discard.cancel()

    def kill_child(self) -> None:
        """Kill the current bridge child abruptly (tests use it to check restart without loss)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()


async def collect(mode: str = "replay", **kw) -> tuple[list[Event], Counter]:
    """All events of a replay (or of a live stream until it is closed) plus the metrics."""
    async with TraceStream(mode, **kw) as s:
        evs = [ev async for ev in s]
        return evs, s.metrics
