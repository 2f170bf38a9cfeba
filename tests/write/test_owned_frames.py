"""Frames handed over (``record_step(..., owned=True)``, issue 19 item 1): the thread
placement keeps the caller's array in its open chunk instead of copying it, counts its
bytes in the queue's bounds like a copy's, and the compressor streams the chunk's frames
into zstd without a gather copy, in the same format (parts and seek table included);
anything it cannot keep as it is (not C-contiguous) is copied, and the storage process
always copies into shared memory."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard
from conftest import writer_overrides

from framestore import FrameStore
from framestore._format import ChunkHeader, Codec
from framestore.disk.codecs import decode_chunk, encode_chunk, zstd_parts
from framestore.write import _openchunks as openchunks
from framestore.write._budget import QueueBudget
from framestore.write._openchunks import ArrayBuffers, ChunkAssembler

ENV_ID = "ALE/Assault-v5"


def count_copies(monkeypatch) -> list[int]:
    """Count the producer's frame copies into chunk buffers (``np.copyto``)."""
    copies = [0]
    real = np.copyto

    def copyto(dst, src, *args, **kwargs):
        copies[0] += 1
        return real(dst, src, *args, **kwargs)

    monkeypatch.setattr(openchunks.np, "copyto", copyto)
    return copies


@pytest.mark.parametrize("part_frames", [0, 6])
def test_owned_frames_are_kept_not_copied_and_read_back_bit_exact(
    tmp_path, assault_frames, monkeypatch, part_frames
):
    """50 real Assault frames handed over, in chunks of 20 (in parts of 6, or one zstd
    frame): no producer copy, and every frame reads back bit-exact, one by one (a part
    decoded alone) and in a sequential pass."""
    frames = [f.copy() for f in assault_frames[:50]]
    copies = count_copies(monkeypatch)
    overrides = {"chunk_frames": 20, "part_frames": part_frames, "max_latency": 600.0}
    with FrameStore.open(tmp_path / "s") as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            eid = rec.begin_episode(seed=1)
            for i, f in enumerate(frames):
                rec.record_step(f, action=i % 7, owned=True)
            rec.end_episode()
        assert copies[0] == 0
        for i in (49, 0, 17, 33):
            assert np.array_equal(store.read_frame(eid, i), assault_frames[i])
        got = store.read_frames(eid)
        assert all(np.array_equal(g, f) for g, f in zip(got, assault_frames[:50], strict=True))


def test_frames_not_handed_over_are_copied(tmp_path, assault_frames, monkeypatch):
    """Without ``owned`` every frame is copied into its chunk's buffer, as before."""
    copies = count_copies(monkeypatch)
    with FrameStore.open(tmp_path / "s") as store:
        with store.recorder(ENV_ID, overrides={"chunk_frames": 20}) as rec:
            eid = rec.begin_episode(seed=1)
            for f in assault_frames[:30]:
                rec.record_step(f)
            rec.end_episode()
        assert copies[0] == 30
        assert all(
            np.array_equal(g, f)
            for g, f in zip(store.read_frames(eid), assault_frames[:30], strict=True)
        )


def test_the_storage_process_copies_frames_handed_over(tmp_path, assault_frames):
    """The storage process reads frames from shared memory only: a frame handed over is
    copied there at once, so changing it after ``record_step`` changes nothing stored."""
    frames = [f.copy() for f in assault_frames[:12]]
    with FrameStore.open(tmp_path / "s") as store:
        with store.recorder(ENV_ID, overrides=writer_overrides("process")) as rec:
            eid = rec.begin_episode(seed=1)
            for f in frames:
                rec.record_step(f, owned=True)
                f[:] = 0  # breaks the promise: only a copy keeps the frame
            rec.end_episode()
        got = store.read_frames(eid)
        assert all(np.array_equal(g, f) for g, f in zip(got, assault_frames[:12], strict=True))


class _Held:
    """A writer that never writes: the chunks handed off stay queued."""

    def __init__(self):
        self.chunks = []

    def __call__(self, chunk):
        self.chunks.append(chunk)


def _assembler(max_frames: int, max_bytes: int, policy: str = "drop", chunk_frames: int = 4):
    budget = QueueBudget(max_frames, max_bytes, policy, 0.0, lambda: (0, 0))
    held = _Held()
    chunks = ChunkAssembler(
        budget,
        ArrayBuffers(max_bytes),
        held,
        None,  # no waiter: the drop policy never waits
        chunk_frames=chunk_frames,
        chunk_bytes=1 << 30,
        max_latency=600.0,
        open_frames=max_frames,
        open_bytes=max_bytes,
        keep_owned=True,
    )
    return chunks, held


def test_the_queue_counts_the_bytes_of_frames_handed_over(assault_frames):
    """Frames kept as handed over count in the queue's byte bound as copies would: with
    room for 5 frames' bytes, the 6th frame is dropped (and nothing was copied)."""
    frame_bytes = assault_frames[0].nbytes
    chunks, held = _assembler(max_frames=100, max_bytes=5 * frame_bytes)
    refs = [chunks.place(f, (1, i), None, owned=True) for i, f in enumerate(assault_frames[:6])]
    assert [r.dropped for r in refs] == [False] * 5 + [True]
    assert chunks.budget.queued() == (5, 5 * frame_bytes)
    chunks.close_all()
    kept = [f for c in held.chunks for f in c.frames]
    assert [k is f for k, f in zip(kept, assault_frames, strict=False)] == [True] * 5
    assert sum(c.nbytes for c in held.chunks) == 5 * frame_bytes


def test_a_frame_that_cannot_be_kept_as_it_is_is_copied(assault_frames):
    """A non-contiguous frame handed over is copied (C order), and so is a frame not
    handed over that joins a chunk of kept frames: changing either afterwards changes
    nothing in the chunk; a contiguous one handed over is the very array."""
    chunks, held = _assembler(max_frames=100, max_bytes=1 << 30, chunk_frames=8)
    kept = assault_frames[0].copy()
    flipped_source = assault_frames[1].copy()
    flipped = flipped_source[:, ::-1]  # a view: not C-contiguous
    plain = assault_frames[2].copy()
    chunks.place(kept, (1, 0), None, owned=True)
    chunks.place(flipped, (1, 1), None, owned=True)
    chunks.place(plain, (1, 2), None)
    want_flipped, want_plain = flipped.copy(), plain.copy()
    flipped_source[:] = 0
    plain[:] = 0
    chunks.close_all()
    (chunk,) = held.chunks
    first, second, third = chunk.frames
    assert first is kept
    assert second.flags.c_contiguous and not np.shares_memory(second, flipped_source)
    assert np.array_equal(second, want_flipped)
    assert np.array_equal(third, want_plain)


def test_frames_handed_over_start_a_new_chunk_when_the_shape_changes(assault_frames):
    """A chunk holds one shape, kept frames as copied ones."""
    chunks, held = _assembler(max_frames=100, max_bytes=1 << 30, chunk_frames=8)
    small = np.ascontiguousarray(assault_frames[0][:100])
    chunks.place(assault_frames[0], (1, 0), None, owned=True)
    chunks.place(small, (1, 1), None, owned=True)
    chunks.close_all()
    assert [c.frame_shape for c in held.chunks] == [assault_frames[0].shape, small.shape]


@pytest.mark.parametrize("part_frames", [0, 6, 16])
def test_separate_frames_encode_in_the_same_layout_as_one_buffer(assault_frames, part_frames):
    """The streamed encoding (separate frames, no gather copy) writes what the buffer's
    does: the same lengths, the same parts (zstd frames of the same content sizes and a
    seek table naming the same frames), and decodes bit-exact."""
    frames = assault_frames[:20]
    buffer = np.stack(frames)
    zc = zstandard.ZstdCompressor(level=3, write_content_size=True)
    lengths, data = encode_chunk(list(frames), Codec.ZSTD, zc, part_frames)
    want_lengths, want_data = encode_chunk(buffer, Codec.ZSTD, zc, part_frames)
    assert lengths == want_lengths
    header = ChunkHeader(
        codec=int(Codec.ZSTD), ndim=3, height=210, width=160, channels=3, stream_key=1,
        stream_index=0, frame_keys=tuple(range(20)), lengths=lengths,
        steps_length=0, steps_count=0,
    )  # fmt: skip
    parts, want_parts = zstd_parts(header, data), zstd_parts(header, want_data)
    if part_frames == 0:
        assert parts is None and want_parts is None
        assert zstandard.get_frame_parameters(data).content_size == buffer.nbytes
    else:
        assert parts is not None and want_parts is not None
        assert parts.first == want_parts.first == (*range(0, 20, part_frames), 20)
    dz = zstandard.ZstdDecompressor()
    assert np.array_equal(decode_chunk(header, data, dz), buffer)
    # one standard zstd stream, as any zstd decoder reads it
    raw = dz.stream_reader(data, read_across_frames=True).read()
    assert raw == buffer.tobytes()
