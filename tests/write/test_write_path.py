"""The chunk-granular write path (issue 19 items 1-2), in both placements: chunks are cut
by size, shape and latency only, never by a database commit; the writer is woken once
per chunk, not per frame; rows commit once their chunk is written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import WRITERS, wait_for, writer_overrides

from framestore import FrameStore
from framestore.disk.scan import scan_segment
from framestore.disk.segments import list_segment_ids, segment_path

ENV_ID = "ALE/Assault-v5"


def chunk_lengths(root) -> list[int]:
    """Frames per CHUNK record of every segment, in file order (chunks with frames)."""
    out = []
    for sid in list_segment_ids(root):
        scan = scan_segment(segment_path(root, sid), sid)
        out += [h.count for _off, h in sorted(scan.chunks.items()) if h.count]
    return out


@pytest.mark.parametrize("placement", WRITERS)
def test_commits_never_cut_chunks(tmp_path, assault_frames, placement):
    """200 frames, 16-frame chunks, a commit every 4 rows: 13 chunks (12 full ones and
    the tail), the same count as without any commit; every row points at its frame."""
    overrides = {
        "chunk_frames": 16,
        "batch_size": 4,  # a commit every 4 rows: 50 commits inside 13 chunks
        "max_latency": 600.0,  # no cut by latency on a loaded machine
        **writer_overrides(placement),
    }
    frames = assault_frames[:200]
    with FrameStore.open(tmp_path / "s") as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            eid = rec.begin_episode(seed=1)
            for i, f in enumerate(frames):
                rec.record_step(f, action=i % 7, reward=1.0)
            rec.end_episode()
            rec.flush()
            assert rec.metrics().sink.batches >= 13  # a commit (at least) per chunk
        assert chunk_lengths(tmp_path / "s") == [16] * 12 + [8]
        steps = store.read_steps(eid)
        assert [s.step for s in steps] == list(range(200))
        got = store.read_frames(eid)
        assert all(np.array_equal(g, f) for g, f in zip(got, frames, strict=True))


@pytest.mark.parametrize("placement", WRITERS)
def test_the_writer_is_woken_once_per_chunk(tmp_path, assault_frames, placement):
    """The writer's wake-ups count chunks handed off (and records noted), never frames:
    96 frames in 8-frame chunks wake it 12 times for the frames."""
    overrides = {"chunk_frames": 8, "max_latency": 600.0, **writer_overrides(placement)}
    with FrameStore.open(tmp_path / "s") as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            rec.begin_episode(seed=1)
            before = rec.metrics().frames.writer_wakeups
            for f in assault_frames[:96]:
                rec.record_step(f)
            rec.flush()
            m = rec.metrics().frames
            assert m.frames_written == 96
            assert m.chunks_written == 12
            assert m.writer_wakeups - before == 12
            rec.end_episode()


@pytest.mark.parametrize("placement", WRITERS)
def test_an_idle_open_chunk_is_written_after_max_latency(tmp_path, assault_frames, placement):
    """A producer that stops recording (a paused game) still gets its last steps
    committed: the open chunk is handed off ``max_latency`` after it opened, without a
    flush. (Waits on the outcome, not on a duration.)"""
    overrides = {"chunk_frames": 64, "max_latency": 0.2, **writer_overrides(placement)}
    with FrameStore.open(tmp_path / "s") as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            eid = rec.begin_episode(seed=1)
            for f in assault_frames[:5]:
                rec.record_step(f)
            wait_for(lambda: rec.metrics().sink.steps_committed == 5, timeout=60)
            assert len(store.read_steps(eid)) == 5
            rec.end_episode()
        assert chunk_lengths(tmp_path / "s") == [5]


@pytest.mark.parametrize("placement", WRITERS)
def test_an_interrupt_while_placing_a_frame_leaves_no_empty_chunk(
    tmp_path, assault_frames, placement, monkeypatch
):
    """Ctrl-C landing after a chunk got its buffer but before the frame was copied in
    (CI saw it once: verify then found "a chunk without frames must have no shape and
    some steps"): the step is not recorded, the empty chunk is never written, and the
    store verifies."""
    import framestore.write._openchunks as openchunks
    from tools.verify import verify

    overrides = {"chunk_frames": 8, "max_latency": 600.0, **writer_overrides(placement)}
    real_copyto = np.copyto
    calls = {"n": 0}

    def copyto(dst, src, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:  # the first frame of the second chunk: its buffer is taken
            raise KeyboardInterrupt
        return real_copyto(dst, src, *args, **kwargs)

    path = tmp_path / "s"
    with FrameStore.open(path) as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            eid = rec.begin_episode(seed=1)
            monkeypatch.setattr(openchunks.np, "copyto", copyto)
            with pytest.raises(KeyboardInterrupt):
                for i, f in enumerate(assault_frames[:20]):
                    rec.record_step(f, action=i % 7, reward=1.0)
            monkeypatch.setattr(openchunks.np, "copyto", real_copyto)
        # the recorder closed the episode (interrupted) with its 8 placed frames
        assert [s.step for s in store.read_steps(eid)] == list(range(8))
    assert chunk_lengths(path) == [8]
    report = verify(path)
    assert report.ok, [str(p) for p in report.problems]


def test_chunk_buffers_in_rotation_are_all_reused():
    """Interleaved episodes keep many chunk buffers in rotation (8 open, 8 being
    written): every buffer that comes back is reused while all buffers made stay within
    the bound (the queue's bytes), so a long recording stops making fresh (page-faulting)
    buffers after warm-up; past the bound a returned buffer is freed."""
    from framestore.write._openchunks import ArrayBuffers

    shape, capacity = (210, 160, 3), 4
    size = capacity * 210 * 160 * 3
    buffers = ArrayBuffers(keep_bytes=16 * size)
    first = [buffers.get(shape, capacity)[0] for _ in range(16)]
    for buf in first:
        buffers.put_back(buf)
    again = [buffers.get(shape, capacity)[0] for _ in range(16)]
    assert {id(b) for b in again} == {id(b) for b in first}
    extra = buffers.get(shape, capacity)[0]  # a 17th: made, over the bound
    assert all(extra is not b for b in first)
    for buf in [*again, extra]:
        buffers.put_back(buf)
    kept = [buffers.get(shape, capacity)[0] for _ in range(17)]
    assert sum(any(k is b for b in [*first, extra]) for k in kept) == 16
