"""`--dtype` of the commands that decode or score: bf16 is refused on a CPU backend in one line that points at int8
and fp32 (before any model is read); int8 quantizes on load and decodes like the int8 file `convert` writes."""

from __future__ import annotations

import jax
import pytest

from rwkvjax.cli import main
from tests.conftest import RWKVCPP_DIR

TINY = RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP32.bin"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the refusal is for CPU backends only")
@pytest.mark.parametrize("argv", [["generate", "--prompt", "x"], ["serve"], ["score", "notes.txt"]],
                         ids=["generate", "serve", "score"])
def test_bf16_is_refused_on_cpu_pointing_at_int8_and_fp32(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a model path that does not exist: the refusal must come first, before anything is loaded
    assert main(argv + ["--model", str(tmp_path / "missing.safetensors"), "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dtype bf16:") and err.count("\n") == 1, err
    assert "--dtype int8" in err and "--dtype fp32" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_int8_on_load_generates_what_the_int8_file_generates(capsys, tmp_path):
    args = ["generate", "--prompt", "def ", "--max-tokens", "24", "--temperature", "0"]
    assert main(args + ["--model", str(TINY), "--dtype", "int8"]) in (0, None)
    on_load = capsys.readouterr().out
    out = tmp_path / "tiny-int8.safetensors"
    assert main(["convert", str(TINY), str(out), "--dtype", "int8"]) in (0, None)
    capsys.readouterr()
    assert main(args + ["--model", str(out)]) in (0, None)  # an int8 file loads as int8 with the default --dtype
    assert capsys.readouterr().out == on_load and len(on_load.strip()) > 0
