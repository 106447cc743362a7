"""A live server on 127.0.0.1 (a free port) for the serve tests, with a small random model and a state store."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import rwkvjax
from rwkvjax.io.states import StateStore
from rwkvjax.model.init import init_params
from rwkvjax.model.params import params_hash
from rwkvjax.serve.config import ServeConfig
from rwkvjax.serve.server import serve
from rwkvjax.text.tokenizer import ByteTokenizer, tokenizer_id
from tests.tools.local_server import free_socket, in_thread

SMALL = rwkvjax.Architecture(256, 64, 2, 128, 32, 32, 32, 32)


@contextlib.contextmanager
def running_server(model, warmup=False, **kw):
    sock = free_socket()
    cfg = ServeConfig(model="small-test-model", port=sock.getsockname()[1], warmup=warmup, **kw)
    with in_thread(serve, cfg, sock, start_s=300, stop_s=60, model=model) as url:
        yield url


@pytest.fixture(scope="session")
def small_model():
    return rwkvjax.Model(SMALL, init_params(SMALL, 0, live_output=True), ByteTokenizer())


@pytest.fixture(scope="session")
def store_dir(small_model, tmp_path_factory):
    config, params = small_model.arch, small_model.params
    d = tmp_path_factory.mktemp("states")
    rng = np.random.default_rng(0)
    wkv = rng.normal(0, 3.0, (config.n_layer, config.n_head, config.head_size, config.head_size)).astype(np.float32)
    shift = rng.normal(0, 3.0, (config.n_layer, config.n_embd)).astype(np.float32)
    StateStore(d).put("proj", wkv, base_hash=params_hash(params), tokenizer=tokenizer_id(ByteTokenizer()),
                      att_shift=shift, ffn_shift=shift)
    return d


@pytest.fixture(scope="session")
def server(small_model, store_dir):
    with running_server(small_model, warmup=True, states=str(store_dir), max_batch=24) as url:
        yield url
