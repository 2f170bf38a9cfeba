"""A store written by framestore 0.1.0 (segment format version 1) keeps working: every
command reads it, and compaction moves its chunks into current-version segments
bit-exactly (the checks: tests/oldstores.py, shared with test_format_v2.py).

The fixture (tests/fixtures/store-v0.1.0) holds three Assault episodes of 25 steps: two
in a zstd segment, one in a PNG segment, recorded with seeds 3, 4, 5 and a seeded random
policy. Its frames are checked against the environment regenerated from seed + actions.
"""

from __future__ import annotations

import pytest
from oldstores import (
    FIXTURES,
    check_every_read_command,
    check_frames_read_bit_exactly,
    check_gc_compacts_into_current_segments,
    check_recording_adds_current_segments,
    copy_fixture,
    segment_versions,
)

NAME = "store-v0.1.0"


@pytest.fixture
def v1_store(tmp_path):
    return copy_fixture(NAME, tmp_path)


def test_fixture_is_version_1():
    assert segment_versions(FIXTURES / NAME) == [(1, 1), (2, 1)]


def test_frames_of_a_v1_store_read_bit_exactly(v1_store):
    check_frames_read_bit_exactly(v1_store, [(1, 25, 3), (2, 25, 4), (3, 25, 5)])


def test_every_read_command_works_on_a_v1_store(v1_store, tmp_path):
    check_every_read_command(v1_store, tmp_path, steps=[25, 25, 25], frames=75)


def test_gc_compacts_a_v1_store_into_current_segments(v1_store):
    check_gc_compacts_into_current_segments(v1_store)


def test_recording_into_a_v1_store_adds_current_segments(v1_store, assault_frames):
    check_recording_adds_current_segments(v1_store, assault_frames)
