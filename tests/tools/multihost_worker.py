"""One process of the multi-host test (tests/train/test_multihost.py): a few learner updates of a tiny model.

    python tests/tools/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.json

With NUM_PROCESSES > 1 it joins a local coordinator (127.0.0.1:PORT) and feeds only its own slice of each
step's global batch; with 1 it feeds the whole batch. Writes the per-step losses and the final S0.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

GLOBAL_BATCH, STEPS, CTX = 4, 3, 24


def main():
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if nproc > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                                   initialization_timeout=120)
    import optax

    import rwkvjax
    from rwkvjax.model.init import init_params
    from rwkvjax.train.data import Window
    from rwkvjax.train.learner import Learner
    from rwkvjax.train.step import data_mesh, to_host
    from rwkvjax.train.trainable import init_trainable

    config = rwkvjax.Architecture(256, 64, 2, 128, 32, 32, 32, 32)
    params = init_params(config, 0, live_output=True)
    tr0 = init_trainable(config)
    # plain SGD: S0 is then linear in the summed gradients, so the comparison is not blurred by Adam's
    # normalisation of near-zero gradient entries (where summation order decides the sign)
    tx = optax.apply_if_finite(optax.sgd(0.5), 10)
    mesh = data_mesh()
    assert mesh.devices.size == nproc * jax.local_device_count()
    per_proc = GLOBAL_BATCH // nproc
    learner = Learner(config, params, tr0, tx, ctx_len=CTX, live_per_step=per_proc, mesh=mesh)
    rng = np.random.default_rng(0)
    losses = []
    for step in range(STEPS):
        windows = [Window(f"s{step}-{i}", rng.integers(1, 256, CTX).astype(np.int32), CTX, CTX)
                   for i in range(GLOBAL_BATCH)]
        mine = windows[pid * per_proc:(pid + 1) * per_proc]  # this process's part of the global batch
        upd = learner.update(mine)
        losses.append(upd.metrics["loss"])
    s0 = to_host(learner.trainable.wkv)
    Path(out).write_text(json.dumps({"losses": losses, "s0": s0.tolist(), "devices": int(mesh.devices.size),
                                     "window_nll": upd.window_nll.tolist()}))
    if nproc > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
