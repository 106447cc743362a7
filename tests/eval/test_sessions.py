"""The split by time: the latest session groups are held out, a subagent transcript goes with its parent."""

from __future__ import annotations

import numpy as np
import pytest

from rwkvjax.errors import DataError
from rwkvjax.eval.sessions import Session, load_sessions, split_by_time
from rwkvjax.text.tokenizer import ByteTokenizer
from tests.conftest import CLAUDE_PROJECTS


def _s(sid, start, parent=None):
    s = Session(sid, start, "x", np.zeros(1, np.int32), np.zeros(1, np.int8), np.ones(1, np.int32), parent=parent)
    s.group = parent or sid
    return s


def test_latest_groups_are_held_out_and_subagents_follow_their_parent():
    ss = [_s("a", "2026-01-01"), _s("b", "2026-01-02"), _s("b-agent", "2026-01-02T05", parent="b"),
          _s("c", "2026-01-03"), _s("d", "2026-01-04"), _s("d-agent", "2026-01-04T01", parent="d")]
    split_by_time(ss, 1 / 3)  # 4 groups -> the last 2 held out
    assert {s.sid for s in ss if s.heldout} == {"c", "d", "d-agent"}
    train_end = max(s.start for s in ss if not s.heldout)
    assert all(s.start > train_end for s in ss if s.heldout and s.parent is None)


def test_at_least_one_group_stays_for_training():
    ss = [_s("a", "1"), _s("b", "2")]
    split_by_time(ss, 0.99)
    assert [s.heldout for s in ss] == [False, True]
    with pytest.raises(DataError, match="at least 2"):
        split_by_time([_s("a", "1"), _s("a-agent", "2", parent="a")], 0.5)


def test_real_sessions_group_by_parent():
    ss = load_sessions(str(CLAUDE_PROJECTS), ByteTokenizer())
    by_sid = {s.sid: s for s in ss}
    subs = [s for s in ss if s.parent in by_sid]
    assert subs and all(s.group == s.parent for s in subs)
    split_by_time(ss, 1 / 3)
    for s in subs:
        assert s.heldout == by_sid[s.parent].heldout
    assert sum(s.heldout for s in ss) >= 2
