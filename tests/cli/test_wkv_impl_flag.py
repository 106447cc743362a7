"""`--wkv-impl` offers every implementation `rwkvjax.model.wkv.WkvImpl` has (its names come from one table)."""

from __future__ import annotations

import pytest

from rwkvjax.cli import build_parser
from rwkvjax.options import WKV_IMPLS

ARGV = {"train": ["train"], "pretrain": ["pretrain", "--out", "run"]}


@pytest.mark.parametrize("command", sorted(ARGV))
@pytest.mark.parametrize("impl", ["loop_chunked", "loop", "auto"])
def test_every_wkv_impl_is_accepted(command, impl):
    argv = ARGV[command] + ["--wkv-impl", impl]
    assert build_parser(argv).parse_args(argv).wkv_impl == impl


@pytest.mark.parametrize("command", sorted(ARGV))
def test_the_choices_are_the_implementation_table(command, capsys):
    argv = ARGV[command] + ["--wkv-impl", "fast"]
    with pytest.raises(SystemExit):
        build_parser(argv).parse_args(argv)
    err = capsys.readouterr().err
    assert "invalid choice: 'fast'" in err and "(choose from " + ", ".join(map(repr, WKV_IMPLS)) + ")" in err


def test_the_enum_and_the_choices_agree():
    from rwkvjax.model.wkv import WkvImpl
    assert tuple(m.value for m in WkvImpl) == tuple(WKV_IMPLS)
