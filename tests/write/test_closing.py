"""The one shutdown policy (``framestore/_closing.py``): every closer runs and the first
error rises (``close_all``); leaving a ``with`` block of a store, recorder or frame
writer closes it either way, and after the caller's own exception the caller's rises
while an error of the close is logged (``close_on_exit``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from framestore import FrameStore, StoreClosed
from framestore._closing import close_all, close_on_exit


def test_close_all_runs_every_closer_and_raises_the_first_error(caplog):
    ran = []

    def fails(name):
        def close():
            ran.append(name)
            raise RuntimeError(name)

        return close

    with pytest.raises(RuntimeError, match="first"):
        close_all([fails("first"), lambda: ran.append("ok"), fails("second")])
    assert ran == ["first", "ok", "second"]
    assert "second" in caplog.text


def test_close_on_exit_lets_a_close_error_rise_only_when_nothing_failed(caplog):
    def close():
        raise RuntimeError("close failed")

    with pytest.raises(RuntimeError, match="close failed"):
        close_on_exit(close, failing=False)
    with caplog.at_level(logging.ERROR, logger="framestore"):
        close_on_exit(close, failing=True)  # the caller's exception is the one to see
    assert "while closing after an error: close failed" in caplog.text


@pytest.mark.parametrize("what", ["store", "recorder"])
def test_a_with_block_that_raises_still_closes_and_the_callers_error_rises(tmp_path, what):
    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(KeyError, match="the caller's"):
        with FrameStore.open(tmp_path / "s") as store:
            held = store
            with store.recorder(env_id="test/Box-v0") as rec:
                rec.begin_episode(seed=0)
                rec.record_step(frame)
                if what == "recorder":
                    raise KeyError("the caller's")
            raise KeyError("the caller's")
    with pytest.raises(StoreClosed):
        held.episodes()
    with FrameStore.open(tmp_path / "s", readonly=True) as store:
        (ep,) = store.episodes()
        assert np.array_equal(store.read_frame(ep.id, 0), frame)
