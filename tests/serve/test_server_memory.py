"""The server samples from the session memory's mixture: a state's memory shapes its replies, each request learns
in a scratch copy that never reaches the file, speculative decoding leaves the text unchanged; the flags are checked.
Driven by the official `openai` client on 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import urllib.request

import numpy as np
import openai
import pytest

from rwkvjax.cli import main
from rwkvjax.errors import ConfigError
from rwkvjax.io.states import StateStore
from rwkvjax.memory.lm import mixture_bits
from rwkvjax.memory.memory import SessionMemory
from rwkvjax.model.params import params_hash
from rwkvjax.model.state import zero_state
from rwkvjax.serve.config import GenerateConfig, ServeConfig
from rwkvjax.text.tokenizer import ByteTokenizer, tokenizer_id
from tests.serve.conftest import running_server
from tests.serve.test_mixture import small

SECRET = "The launch code is XQ-7734-ZEBRA-PAPAYA.\n"
COPY = ("def parse_config(path):\n    with open(path) as f:\n        return yaml.safe_load(f)\n\n"
        "Again, renamed:\n\ndef parse_settings(path):\n    with open(path) as f:\n  ")


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)


def health(url) -> dict:
    return json.loads(urllib.request.urlopen(url + "/health", timeout=60).read())


@pytest.fixture(scope="module")
def memory_store(small_model, tmp_path_factory):
    """States `remembers` (its memory has read SECRET many times, scored by the model, so its mixers trust it)
    and `forgetful` (no memory)."""
    config, params = small_model.arch, small_model.params
    d = tmp_path_factory.mktemp("memstates")
    mem = SessionMemory(small(config.vocab_size))
    mixture_bits(params, config, list((SECRET * 16).encode()), zero_state(config, 1), mem)
    store = StateStore(d)
    wkv = np.zeros((config.n_layer, config.n_head, config.head_size, config.head_size), np.float32)
    kw = dict(base_hash=params_hash(params), tokenizer=tokenizer_id(ByteTokenizer()))
    store.put("remembers", wkv, memory=mem, **kw)
    store.put("forgetful", wkv, **kw)
    return d


def _files(d):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def _greedy(url, model, prompt, n=24):
    return client(url).completions.create(model=model, prompt=prompt, max_tokens=n, temperature=0).choices[0].text


def test_a_state_s_memory_shapes_the_reply_and_is_never_written(small_model, memory_store):
    before = _files(memory_store)
    with running_server(small_model, states=str(memory_store)) as url:
        ids = {m.id: m for m in client(url).models.list().data}
        assert ids["remembers"].model_extra["memory"] is True and ids["forgetful"].model_extra["memory"] is False
        reply = _greedy(url, "remembers", "The launch code is")
        assert reply.startswith(" XQ-7734"), reply
        assert "XQ-7734" not in _greedy(url, "forgetful", "The launch code is")  # an empty memory
        assert "XQ-7734" not in _greedy(url, "base", "The launch code is")
        # requests learn in scratch copies: the same request again gets the same reply, streamed or not,
        # and nothing reaches the state's files
        again = "".join(ch.choices[0].text for ch in client(url).completions.create(
            model="remembers", prompt="The launch code is", max_tokens=24, temperature=0, stream=True))
        assert again == reply
        chat = client(url).chat.completions.create(model="remembers", max_tokens=8, temperature=1.0, seed=3,
                                                    messages=[{"role": "user", "content": "What is the code?"}])
        assert chat.choices[0].finish_reason in ("stop", "length")
        assert health(url)["memory"] is True
    assert _files(memory_store) == before
    with running_server(small_model, states=str(memory_store), memory=False) as url:
        assert "XQ-7734" not in _greedy(url, "remembers", "The launch code is")  # --no-memory: the model alone
        assert health(url)["memory"] is False and health(url)["speculation"]["memory_rows"] == 0


def test_speculative_greedy_is_plain_greedy_over_http(small_model, memory_store):
    prompts = [("remembers", "The launch code is"), ("remembers", COPY), ("base", COPY), ("forgetful", "x = 1\n")]
    with running_server(small_model, states=str(memory_store), draft_tokens=0) as url:
        plain = [_greedy(url, m, p, 40) for m, p in prompts]
        assert health(url)["speculation"]["verifications"] == 0
    with running_server(small_model, states=str(memory_store), draft_tokens=7, max_batch=4) as url:
        alone = [_greedy(url, m, p, 40) for m, p in prompts]
        with concurrent.futures.ThreadPoolExecutor(4) as ex:  # rows verifying while others take the step
            together = list(ex.map(lambda mp: _greedy(url, *mp, 40), prompts))
        spec = health(url)["speculation"]
    assert alone == plain and together == plain
    assert spec["verifications"] > 0 and spec["accepted"] > 0, spec


@pytest.mark.parametrize("kw,flag", [({"draft_tokens": -1}, "--draft-tokens"), ({"draft_tokens": 65}, "--draft-tokens"),
                                     ({"memory": False, "draft_tokens": 3}, "--draft-tokens"),
                                     ({"memory_mb": 0.5}, "--memory-mb")])
def test_memory_flags_are_checked(kw, flag):
    for cls, extra in ((ServeConfig, {}), (GenerateConfig, {"prompt": "x"})):
        with pytest.raises(ConfigError, match=flag):
            cls(**extra, **kw)
    assert ServeConfig(memory=False).memory is False and ServeConfig(memory=False, draft_tokens=0).draft_tokens == 0


@pytest.mark.parametrize("argv,flag", [(["--draft-tokens", "-2"], "--draft-tokens"),
                                       (["--no-memory", "--draft-tokens", "4"], "--draft-tokens"),
                                       (["--memory-mb", "0"], "--memory-mb")])
def test_cli_refuses_bad_memory_flags(argv, flag, capsys):
    for command in (["generate", "--prompt", "x"], ["serve"]):
        assert main(command + argv) == 2
        err = capsys.readouterr().err
        assert flag in err and "Traceback" not in err
