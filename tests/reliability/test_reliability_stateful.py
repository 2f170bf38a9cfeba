"""A stateful hypothesis test: record, delete, gc, recover and reopen a real store in any
order, checking after every rule that it holds exactly what a plain dict model says."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from framestore import FrameStore
from framestore.errors import EpisodeNotFound
from tools.gc import collect
from tools.recover import recover
from tools.verify import verify

SHAPES = [(4, 6), (5, 3, 3), (2, 2, 4), (7, 5, 1)]
OVERRIDES = {"codec": "raw", "chunk_frames": 3, "batch_size": 4, "segment_bytes": 1 << 20}


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="fs-stateful-"))
        self.path = self.dir / "m.store"
        self.store = FrameStore.open(self.path)
        self.model: dict[int, list[np.ndarray]] = {}

    @rule(
        steps=st.integers(1, 8),
        shape_ids=st.lists(st.integers(0, len(SHAPES) - 1), min_size=1, max_size=3),
        codec=st.sampled_from(["raw", "zstd", "png"]),
        seed=st.integers(0, 2**16),
    )
    def record_episode(self, steps, shape_ids, codec, seed):
        rng = np.random.default_rng(seed)
        frames = [
            rng.integers(0, 256, SHAPES[shape_ids[i % len(shape_ids)]], dtype=np.uint8)
            for i in range(steps)
        ]
        with self.store.recorder("Synthetic-v0", overrides={**OVERRIDES, "codec": codec}) as rec:
            eid = rec.begin_episode(seed=seed)
            for i, f in enumerate(frames):
                rec.record_step(f, action=i, reward=float(i))
            rec.end_episode()
        self.model[eid] = frames

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data):
        eid = data.draw(st.sampled_from(sorted(self.model)))
        self.store.delete_episodes([eid])
        del self.model[eid]

    @rule(eid=st.integers(1000, 2000))
    def delete_unknown(self, eid):
        try:
            self.store.delete_episodes([eid])
        except EpisodeNotFound:
            return
        raise AssertionError("deleting an unknown episode succeeded")

    @rule(threshold=st.sampled_from([0.0, 0.5, 1.0]))
    def gc(self, threshold):
        collect(self.store, threshold=threshold)

    @rule()
    def recover(self):
        r = recover(self.store)
        assert not r.data_lost, r.as_dict()

    @rule(readonly=st.booleans())
    def reopen(self, readonly):
        self.store.close()
        self.store = FrameStore.open(self.path, readonly=readonly)
        if readonly:  # readers see the same; writers need a writable handle back
            self.check_agrees()
            self.store.close()
            self.store = FrameStore.open(self.path)

    @invariant()
    def check_agrees(self):
        eps = self.store.episodes()
        assert [e.id for e in eps] == sorted(self.model)
        for e in eps:
            got = list(self.store.iter_steps_frames(e.id, skip_missing=False))
            want = self.model[e.id]
            assert [s for s, _ in got] == list(range(len(want)))
            for (_s, a), b in zip(got, want, strict=True):
                assert a.shape == b.shape and np.array_equal(a, b)

    def teardown(self):
        try:
            assert verify(self.store).ok
        finally:
            self.store.close()
            shutil.rmtree(self.dir, ignore_errors=True)


StoreMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("FRAMESTORE_STATEFUL_EXAMPLES", "60")),
    stateful_step_count=int(os.environ.get("FRAMESTORE_STATEFUL_STEPS", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
TestStoreMachine = StoreMachine.TestCase
