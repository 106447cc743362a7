"""Multi-host data parallelism for real: two CPU processes joined by `jax.distributed.initialize` on 127.0.0.1,
each feeding its own half of every global batch, give the loss and updated S0 of one process fed it all."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.conftest import REPO

WORKER = REPO / "tests" / "tools" / "multihost_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    return env


def test_two_processes_match_one_process(tmp_path):
    ref = tmp_path / "single.json"
    subprocess.run([sys.executable, str(WORKER), "0", "1", "0", str(ref)], env=_env(), check=True, timeout=600)
    port = _free_port()
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), "2", str(port), str(outs[i])], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    single = json.loads(ref.read_text())
    parts = [json.loads(o.read_text()) for o in outs]
    assert single["devices"] == 1 and all(p["devices"] == 2 for p in parts)
    for p in parts:  # the loss is over the global batch: every process reports the single-process value
        np.testing.assert_allclose(p["losses"], single["losses"], rtol=1e-5)
        np.testing.assert_allclose(np.asarray(p["s0"]), np.asarray(single["s0"]), rtol=1e-5, atol=1e-7)
    # each process got back the per-window NLLs of exactly the windows it fed
    np.testing.assert_allclose(parts[0]["window_nll"] + parts[1]["window_nll"], single["window_nll"], rtol=1e-5)
    assert not np.allclose(single["s0"], 0)  # S0 moved
