"""The live source of a training run: ingestion in a background thread, windows cut on the host.

Iterating a `LiveWindows` yields each step's live windows: it pulls events until `live_per_step` windows
are ready, and yields [] once the transcripts are exhausted (a step of replay alone). Everything it
holds (cursor, window assembler with its dynamic tokenizer, windows cut but not trained) is part of the
checkpoint, so a resumed run neither drops nor repeats text.
"""

from __future__ import annotations

import queue
import threading

from ingest.cursor import Cursor
from rwkvjax.io.checkpoint import StatePart
from rwkvjax.merges.dyntok import DynamicTokenizer
from rwkvjax.train.data import Window, WindowAssembler


class _Ingestion(threading.Thread):
    """Runs the async trace stream in its own thread; events reach the trainer through a bounded queue."""

    END = object()

    def __init__(self, source: tuple[str, ...], cursor: Cursor, maxsize: int = 4096):
        super().__init__(daemon=True, name="ingestion")
        self.source, self.cursor = source, cursor
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.metrics: dict = {}
        self._stopping = threading.Event()
        self._running = None   # (event loop, task) once run() has them: stop() cancels the task

    def run(self):
        import asyncio

        from ingest.stream import TraceStream
        src = self.source
        mode = src[0] if src[0] in ("live", "replay") else "replay"
        paths = None if src[0] in ("live", "replay") else list(src)

        async def main():
            self._running = (asyncio.get_running_loop(), asyncio.current_task())
            if self._stopping.is_set():  # stop() came before there was a task to cancel
                return
            async with TraceStream(mode, paths=paths, cursor=self.cursor) as stream:
                async for ev in stream:
                    while not self._stopping.is_set():
                        try:
                            self.q.put(ev, timeout=0.2)
                            break
                        except queue.Full:
                            await asyncio.sleep(0)
                    self.metrics = dict(stream.metrics)
                    if self._stopping.is_set():
                        return
                self.metrics = dict(stream.metrics)

        try:
            asyncio.run(main())
            result = self.END
        except BaseException as e:  # forwarded to the training thread, which reports it
            result = e
        if not self._stopping.is_set():  # after stop() nobody reads the queue (a full one would block forever)
            self.q.put(result)

    def stop(self, timeout: float = 10.0):
        """Close the trace stream (which stops the bridge child) and wait for that, up to `timeout` s.

        The stream may be idle for hours in live mode, so the flag alone would not be seen: the task
        waiting on it is cancelled, and its `async with` closes the stream."""
        self._stopping.set()
        if self._running is not None:
            loop, task = self._running
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop has already closed: the stream is closed too
                pass
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)


class LiveWindows(StatePart):
    """Transcripts -> events -> windows, `live_per_step` at a time (use as a context manager).

    A checkpoint part: host entries `cursor`, `assembler`, `ready`, `dyntok` (the assembler's dynamic tokenizer,
    None without one) and `ingest` (the ingestion counters, for `inspect`; not restored: they count this
    process's reading)."""

    def __init__(self, source: tuple[str, ...], assembler: WindowAssembler, live_per_step: int,
                 stop: threading.Event, divert=None, by_project: bool = False):
        """`divert(window) -> bool`: a window it takes (an update gate's held-out slice) is not trained on.
        `by_project`: the windows of a step all come from one project (the others wait for a later step)."""
        self.source, self.asm, self.live_per_step, self.stop = source, assembler, live_per_step, stop
        self.divert, self.by_project = divert, by_project
        self.cursor = Cursor()
        self.ready: list[Window] = []   # windows cut but not trained yet
        self._thread: _Ingestion | None = None
        self._done = False

    @property
    def metrics(self) -> dict:
        return {} if self._thread is None else dict(self._thread.metrics)

    def __enter__(self):
        self._thread = _Ingestion(self.source, self.cursor.copy())
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._thread.stop()

    def __iter__(self):
        n = self.live_per_step
        while True:
            while not self._done and len(self.ready) < n and not self.stop.is_set():
                try:
                    item = self._thread.q.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item is _Ingestion.END:
                    self._done = True
                    self._take(self.asm.flush())
                elif isinstance(item, BaseException):
                    raise item
                else:
                    self.cursor.admit(item)
                    self._take(self.asm.feed(item))
            if self.stop.is_set():
                return
            if self.by_project and self.ready:
                p = self.ready[0].project
                take = {i for i, w in enumerate(self.ready) if w.project == p}
                take = set(sorted(take)[:n])
                live = [w for i, w in enumerate(self.ready) if i in take]
                self.ready = [w for i, w in enumerate(self.ready) if i not in take]
            else:
                live, self.ready = self.ready[:n], self.ready[n:]
            yield live

    def _take(self, windows: list[Window]) -> None:
        self.ready.extend(w for w in windows if self.divert is None or not self.divert(w))

    # ----- checkpoint -----
    def state_dict(self) -> dict:
        return {"cursor": self.cursor.to_json(), "assembler": self.asm.state_dict(),
                "ready": [w.to_dict() for w in self.ready]}

    def load_state_dict(self, d: dict) -> None:
        self.cursor = Cursor.from_json(d["cursor"])
        self.asm.load_state_dict(d["assembler"])
        self.ready = [Window.from_dict(w) for w in d["ready"]]

    def checkpoint_host(self) -> dict:
        dyntok = self.asm.dyntok
        return {**self.state_dict(), "dyntok": None if dyntok is None else dyntok.state_dict(),
                "ingest": {k: int(v) for k, v in self.metrics.items()}}

    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        self.load_state_dict(host)
        if self.asm.dyntok is not None:
            self.asm.dyntok = DynamicTokenizer.from_state_dict(host["dyntok"], self.asm.tok.decode_bytes)
