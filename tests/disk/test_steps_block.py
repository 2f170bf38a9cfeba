"""The steps block of a CHUNK (docs/FORMAT.md): ``pack_steps`` writes each step's flags
byte with the bits of ``StepMeta.flags`` spelled out inline (no call per step, measured
in cpu19); the two must never disagree."""

from __future__ import annotations

import itertools

import zstandard

from framestore._format.steps import StepMeta, pack_steps, unpack_steps


def test_every_combination_of_flags_round_trips_through_the_steps_block():
    steps = [
        StepMeta(
            episode_id=7,
            step=i,
            action="1",
            reward=None if no_reward else 0.5,
            terminated=term,
            truncated=trunc,
            info="{}",
            wall_time=None if no_wall else 1.25,
            frame_shape=None,
            has_frame=has_frame,
            dropped=dropped,
        )  # fmt: skip
        for i, (term, trunc, has_frame, dropped, no_reward, no_wall) in enumerate(
            itertools.product((False, True), repeat=6)
        )
    ]
    block = pack_steps(steps, zstandard.ZstdCompressor(write_content_size=True))
    back = unpack_steps(block, len(steps), 7)
    assert [s.flags for s in back] == [s.flags for s in steps]
    assert len({s.flags for s in steps}) == 64
    assert back == steps
