"""One registry of a run's state parts: the checkpointer saves a step from it and reads one back into it."""

from __future__ import annotations

import numpy as np
import pytest

from rwkvjax.errors import CheckpointMismatch
from rwkvjax.io.checkpoint import RunState, StatePart, TrainCheckpointer


class Box(StatePart):
    """A part with one host entry and, with `item`, one array item."""

    def __init__(self, key: str, value, item: str | None = None, arr=None, log: list | None = None):
        self.key, self.value, self.item, self.arr, self.log = key, value, item, arr, log

    def checkpoint_host(self) -> dict:
        return {self.key: self.value}

    def checkpoint_arrays(self) -> dict:
        return {} if self.item is None else {self.item: {"x": self.arr}}

    def arrays_like(self, host: dict) -> dict:
        return {} if self.item is None else {self.item: {"x": np.zeros(3, np.float32)}}

    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        self.value = host[self.key]
        if self.item is not None:
            self.arr = np.asarray(arrays[self.item]["x"])
        if self.log is not None:
            self.log.append(self.key)


class Refuse(Box):
    def check_checkpoint(self, host: dict) -> None:
        if host[self.key] != self.value:
            raise CheckpointMismatch(f"{self.key} was {host[self.key]}, this run's is {self.value}")


def _state(*parts) -> RunState:
    st = RunState()
    for p in parts:
        st.register(p.key, p)
    return st


def test_a_step_saved_from_the_parts_restores_every_part_in_registration_order(tmp_path):
    arr = np.arange(3, dtype=np.float32)
    with TrainCheckpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save_state(5, _state(Box("step", 5), Box("trainable_tag", "a", "trainable", arr), Box("gate", None)))
    order: list = []
    parts = (Box("step", 0, log=order), Box("trainable_tag", "", "trainable", None, log=order),
             Box("gate", {"x": 1}, log=order))
    st = _state(*parts)
    with TrainCheckpointer(tmp_path / "ck", read_only=True) as ck:
        step, (host, arrays) = ck.newest_intact(lambda s: ck.read_state(s, st))
        assert step == 5 and ck.restore_host()["trainable_tag"] == "a"  # the host JSON is one flat dict
    assert order == []  # reading a step restores nothing yet
    st.restore(host, arrays)
    assert order == ["step", "trainable_tag", "gate"]
    assert [p.value for p in parts] == [5, "a", None]
    np.testing.assert_array_equal(parts[1].arr, arr)


def test_a_part_that_refuses_the_step_stops_the_resume_before_anything_is_restored(tmp_path):
    with TrainCheckpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save_state(1, _state(Box("step", 1), Refuse("base_hash", "old")))
    order: list = []
    st = _state(Box("step", 0, log=order), Refuse("base_hash", "new", log=order))
    with TrainCheckpointer(tmp_path / "ck", async_save=False) as ck:
        with pytest.raises(CheckpointMismatch, match="base_hash was old"):
            ck.newest_intact(lambda s: ck.read_state(s, st), set_aside=True)
        assert ck.all_steps() == [1]  # refused, not taken for damage: nothing was moved aside
    assert order == []


def test_parts_are_registered_once_and_never_write_the_same_entry():
    st = _state(Box("step", 1))
    with pytest.raises(ValueError, match="registered already"):
        st.register("step", Box("step", 2))
    st.register("other", Box("step", 2))
    with pytest.raises(ValueError, match=r"host entries \['step'\]"):
        st.host()
    st = RunState()
    st.register("a", Box("a", 1, "trainable", np.zeros(3, np.float32)))
    st.register("b", Box("b", 1, "trainable", np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match=r"items \['trainable'\]"):
        st.arrays()
