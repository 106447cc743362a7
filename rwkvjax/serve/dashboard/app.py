"""The dashboard's HTTP app (Starlette): the page, its static files and two read-only JSON routes.

`GET api/metrics?version=V&next=N` returns the metrics rows a page holding N rows of version V lacks;
`GET api/run` the checkpoint summary and the named-state tree. Every URL in the page is relative, so the
same app works at `/` (`cli.py dashboard`) and mounted at `/dashboard/` (`cli.py serve --dashboard`).
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rwkvjax.errors import MissingFile
from rwkvjax.serve.guard import key_ok  # the server's own check (`serve.app.key_ok`)
from rwkvjax.serve.dashboard.rundir import RunFolder
from rwkvjax.serve.dashboard.tail import MetricsTail

# The page's files ship inside the package. The chart library (uPlot) comes from npm through package-lock.json
# and is copied into static/vendor/ with its licence rather than served from node_modules/: an installed
# package has no node_modules, and nothing is built at run time. A test checks that the copy is the locked
# npm package byte for byte (`npm ci`, then copy node_modules/uplot/dist/uPlot.{iife.min.js,min.css} to update).
STATIC = Path(__file__).resolve().parent / "static"


def _int(req: Request, name: str) -> int:
    try:
        return int(req.query_params.get(name, "-1"))
    except ValueError:
        return -1


def build_dashboard(ckpt_dir: str | Path, *, states: str | None = None, api_key: str | None = None) -> Starlette:
    """The app for one run folder. With `api_key`, the JSON routes need `Authorization: Bearer KEY` or
    `?key=KEY` (the page passes on the `key` of its own address); the page and its scripts hold no data."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise MissingFile(f"{ckpt_dir}: no such folder; pass the --ckpt-dir of a `train` run (it may still be "
                          "empty: the page waits for metrics.jsonl)")
    run = RunFolder(ckpt_dir, states)
    tail = MetricsTail(ckpt_dir / "metrics.jsonl")

    def denied(req: Request) -> JSONResponse | None:
        # the server's check (constant time, `Bearer` in any case, `x-api-key`), and the page's `?key=`
        given = req.query_params.get("key")
        if key_ok(req, api_key) or (given is not None and hmac.compare_digest(given.encode(), api_key.encode())):
            return None
        return JSONResponse({"error": "missing or wrong key (add ?key=KEY to the page's address)"}, status_code=401)

    def index(req: Request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    def metrics(req: Request):  # sync: Starlette runs it in a worker thread (file reads)
        if (resp := denied(req)) is not None:
            return resp
        tail.poll()
        body = tail.since(_int(req, "version"), max(_int(req, "next"), 0))
        return JSONResponse({**body, "ckpt_dir": str(run.ckpt_dir), "now": time.time()},
                            headers={"Cache-Control": "no-store"})

    def run_info(req: Request):
        if (resp := denied(req)) is not None:
            return resp
        ck = run.checkpoint()
        return JSONResponse({"ckpt_dir": str(run.ckpt_dir), "checkpoint": ck, "states": run.state_tree(ck)},
                            headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/", index), Route("/api/metrics", metrics), Route("/api/run", run_info),
                             Mount("/static", StaticFiles(directory=STATIC), name="static")])
