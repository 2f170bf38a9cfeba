"""zstd chunks written in parts (docs/FORMAT.md, "zstd parts"): a random read decodes
only the part holding its frame, up to that frame, and returns it bit-exact; sequential
reads, scans and plain zstd decoders see the same frames; old chunks read as before."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import zstandard
from conftest import record_episodes

from framestore import FrameStore
from framestore._format import ChunkHeader, RecordType, iter_records, read_file_header
from framestore.disk.codecs import zstd_parts
from framestore.disk.scan import scan_segment
from framestore.disk.segments import segment_path

STEPS = 20
PARTS = {"codec": "zstd", "chunk_frames": 20, "part_frames": 6}  # parts of 6, 6, 6, 2


@pytest.fixture(scope="module")
def parted(tmp_path_factory, assault_frames):
    path = tmp_path_factory.mktemp("parts") / "runs.store"
    ids = record_episodes(path, assault_frames, episodes=3, steps=STEPS, overrides=PARTS)
    return path, ids


def _chunks(path, segment=1):
    """(header, codec data) of every chunk record of one segment (the store's first)."""
    with open(segment_path(path, segment), "rb") as fp:
        version = read_file_header(fp).version
        out = []
        for rec in iter_records(fp):
            if rec.type == RecordType.CHUNK:
                header = ChunkHeader.unpack(rec.payload, version=version)
                if header.count:
                    out.append((header, rec.payload[header.data_offset :]))
        return out


def test_chunks_are_written_in_parts_that_any_zstd_decoder_reads(parted, assault_frames):
    path, _ids = parted
    chunks = _chunks(path)
    assert chunks
    assert any(h.count > 6 for h, _ in chunks)
    for header, data in chunks:
        parts = zstd_parts(header, data)
        if header.count <= 6:  # (a loaded machine may cut chunks short) one zstd frame
            assert parts is None
        else:
            assert parts is not None
            assert parts.first == (*range(0, header.count, 6), header.count)
        # The data is one standard zstd stream: the parts then a skippable seek table.
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        raw = reader.read()
        want = b"".join(assault_frames[k].tobytes() for k in range(STEPS * 3))
        assert raw in want and len(raw) == header.count * header.frame_bytes


def test_random_reads_in_any_order_are_bit_exact(parted, assault_frames):
    path, ids = parted
    rng = np.random.default_rng(1)
    order = [(e, s) for e in range(3) for s in range(STEPS)]
    rng.shuffle(order)
    with FrameStore.open(path, readonly=True) as store:
        for e, s in order:
            frame = store.read_frame(ids[e], s)
            assert frame.flags.writeable
            assert np.array_equal(frame, assault_frames[e * STEPS + s])
        view = store.read_frame(ids[2], 7, copy=False)
        assert not view.flags.writeable
        assert np.array_equal(view, assault_frames[2 * STEPS + 7])


def _parts_of(path, episode_id: int) -> int:
    """Parts (a chunk of one zstd frame counts one) of an episode's chunks."""
    return sum(-(-h.count // 6) for h, _ in _chunks(path) if h.stream_key == episode_id)


def test_neighbours_read_one_by_one_decode_a_part_at_most_twice(parted, assault_frames):
    path, ids = parted
    with FrameStore.open(path, readonly=True) as store:
        before = store.reader.chunks_decoded
        for s in range(STEPS):  # forward: a prefix, then the whole part
            assert np.array_equal(store.read_frame(ids[0], s), assault_frames[s])
        assert store.reader.chunks_decoded - before <= 2 * _parts_of(path, ids[0])
        before = store.reader.chunks_decoded
        for s in reversed(range(STEPS)):  # backward: the first read of a part is whole
            assert np.array_equal(store.read_frame(ids[1], s), assault_frames[STEPS + s])
        assert store.reader.chunks_decoded - before == _parts_of(path, ids[1])


def test_sequential_reads_and_scans_see_every_frame(parted, assault_frames):
    path, ids = parted
    with FrameStore.open(path, readonly=True) as store:
        before = store.reader.chunks_decoded
        got = [f for eid in ids for f in store.iter_frames(eid)]
        assert store.reader.chunks_decoded - before == len(_chunks(path))  # one per chunk
        # Random reads after a sequential pass are served from its cached chunks.
        assert np.array_equal(store.read_frame(ids[2], 3), assault_frames[2 * STEPS + 3])
    assert len(got) == 3 * STEPS
    assert all(np.array_equal(g, assault_frames[k]) for k, g in enumerate(got))
    scan = scan_segment(segment_path(path, 1), 1, resync=False, decode=True)
    assert scan.sealed and sum(h.count for _o, h, _s in scan.chunk_list) == 3 * STEPS


def test_threads_read_with_their_own_scratch_buffers(parted, assault_frames):
    path, ids = parted
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(80):
                e, s = int(rng.integers(3)), int(rng.integers(STEPS))
                if not np.array_equal(store.read_frame(ids[e], s), assault_frames[e * STEPS + s]):
                    errors.append((e, s))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with FrameStore.open(path, readonly=True) as store:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_forget_drops_what_a_scratch_buffer_holds(parted, assault_frames):
    path, ids = parted
    with FrameStore.open(path, readonly=True) as store:
        store.read_frame(ids[0], 2)
        before = store.reader.chunks_decoded
        store.read_frame(ids[0], 1)  # in the decoded prefix
        assert store.reader.chunks_decoded == before
        store.reader.forget()
        assert np.array_equal(store.read_frame(ids[0], 1), assault_frames[1])
        assert store.reader.chunks_decoded == before + 1


def test_chunks_without_parts_still_read_by_prefix(tmp_path, assault_frames):
    path = tmp_path / "one.store"
    ids = record_episodes(
        path, assault_frames, episodes=1, steps=STEPS,
        overrides={"codec": "zstd", "chunk_frames": 20, "part_frames": 0},
    )  # fmt: skip
    ((header, data),) = _chunks(path)
    assert zstd_parts(header, data) is None
    with FrameStore.open(path, readonly=True) as store:
        for s in (5, 0, 19, 6):
            assert np.array_equal(store.read_frame(ids[0], s), assault_frames[s])


def test_frames_a_pass_handed_out_never_change_while_held(parted, assault_frames):
    # Sequential passes decode into reused buffers: a buffer is reused only once no
    # frame of it is held, so views kept from one pass survive the passes after it.
    path, ids = parted
    with FrameStore.open(path, readonly=True) as store:
        held = list(store.iter_frames(ids[0]))
        kept = next(iter(store.iter_frames(ids[1])))
        for _ in range(3):
            for eid in ids:
                for frame in store.iter_frames(eid):
                    assert not frame.flags.writeable
        assert all(np.array_equal(h, assault_frames[k]) for k, h in enumerate(held))
        assert np.array_equal(kept, assault_frames[STEPS])


def test_kept_parts_are_decoded_once_and_stay_within_the_budget(parted, assault_frames):
    # read(keep=True), what the torch datasets' workers use: a miss decodes the frame's
    # part whole and keeps it, so random reads over the store decode each part once.
    path, ids = parted
    order = [(e, s) for e in range(3) for s in range(STEPS)]
    parts = sum(_parts_of(path, i) for i in ids)
    with FrameStore.open(path, readonly=True) as store:
        before = store.reader.chunks_decoded
        for r in range(2):
            np.random.default_rng(r).shuffle(order)
            for e, s in order:
                loc = store.frame_locations(ids[e], s, s + 1)[0][1]
                view = store.read_at(loc, ids[e], s, copy=False, keep=True)
                assert not view.flags.writeable
                assert np.array_equal(view, assault_frames[e * STEPS + s])
        assert store.reader.chunks_decoded - before == parts
        copy = store.read_at(loc, ids[e], s, keep=True)
        assert copy.flags.writeable and np.array_equal(copy, assault_frames[e * STEPS + s])
    frame_bytes = assault_frames[0].nbytes
    with FrameStore.open(path, readonly=True, cache_bytes=8 * frame_bytes) as store:
        before = store.reader.chunks_decoded
        for e, s in order:  # a budget of 8 frames: parts are evicted and decoded again
            loc = store.frame_locations(ids[e], s, s + 1)[0][1]
            assert np.array_equal(store.read_at(loc, ids[e], s, keep=True),
                                  assault_frames[e * STEPS + s])  # fmt: skip
        assert store.reader.chunks_decoded - before > parts
        assert store.reader._kept_bytes <= 8 * frame_bytes or len(store.reader._kept) == 1


def test_kept_parts_reuse_evicted_buffers_never_ones_still_held(parted, assault_frames):
    # A small budget: parts are evicted all the time and their buffers decode the next
    # parts, except a buffer whose frame a caller still holds (a view, copy=False).
    path, ids = parted
    frame_bytes = assault_frames[0].nbytes
    order = [(e, s) for e in range(3) for s in range(STEPS)]
    np.random.default_rng(5).shuffle(order)
    with FrameStore.open(path, readonly=True, cache_bytes=25 * frame_bytes) as store:
        held, addresses = [], []
        for _round in range(3):
            for i, (e, s) in enumerate(order):
                loc = store.frame_locations(ids[e], s, s + 1)[0][1]
                view = store.read_at(loc, ids[e], s, copy=False, keep=True)
                assert np.array_equal(view, assault_frames[e * STEPS + s])
                addresses.append(view.base.__array_interface__["data"][0])
                if i % 7 == 0:
                    held.append((view, e * STEPS + s))
                del view
        for view, k in held:  # never overwritten by the parts decoded after them
            assert np.array_equal(view, assault_frames[k])
        reader = store.reader
        assert reader._kept_bytes + reader._spare.nbytes <= 25 * frame_bytes
    # Buffers were reused: far fewer distinct ones than parts decoded.
    assert len(set(addresses)) < len(addresses) // 4


def test_read_into_decodes_runs_of_slots_bit_exact_and_checks_them(parted, assault_frames):
    # FrameStore.read_into, what an in-order dataset pass fills its batches with: runs
    # that start and end inside parts, cover parts whole, or the whole chunk.
    from framestore.errors import CorruptRecord

    path, ids = parted
    with FrameStore.open(path, readonly=True) as store:
        pointers = store.frame_locations(ids[1])
        chunk = [(s, loc) for s, loc in pointers if loc[:2] == pointers[0][1][:2]]
        n = len(chunk)
        assert n > 12  # a chunk of several parts of 6
        for a, b in [(0, n), (0, 6), (3, 4), (2, 13), (5, 12), (7, n), (n - 1, n)]:
            steps = [s for s, _loc in chunk[a:b]]
            out = np.zeros((b - a, *assault_frames[0].shape), dtype=np.uint8)
            store.read_into(chunk[a][1], ids[1], steps, out)
            for k, s in enumerate(steps):
                assert np.array_equal(out[k], assault_frames[STEPS + s]), (a, b, s)
        out = np.zeros((3, *assault_frames[0].shape), dtype=np.uint8)
        with pytest.raises(CorruptRecord, match="not episode"):  # the steps are not there
            store.read_into(chunk[2][1], ids[1], [2, 3, 5], out)
        with pytest.raises(CorruptRecord):  # another episode's pointer
            store.read_into(chunk[2][1], ids[0], [2, 3, 4], out)
        with pytest.raises(ValueError, match="not writable uint8 frames"):
            store.read_into(chunk[2][1], ids[1], [2, 3, 4], out[:, :100])


def test_a_pass_decodes_a_chunk_of_parts_in_one_go_and_checks_each_part(parted, assault_frames):
    """A sequential pass decodes all parts of a chunk with one decoder call into its
    buffer (``decode_chunk(out=...)``), bit-exact; a seek table that disagrees with the
    parts' own content sizes still raises ``CorruptRecord`` naming the chunk, as a
    random read of that part would (damage inside a part is the record CRC's to find,
    checked before any decoding)."""
    from framestore._format.parts import pack_seek_table
    from framestore.disk.codecs import decode_chunk
    from framestore.errors import CorruptRecord

    header, data = next((h, d) for h, d in _chunks(parted[0]) if h.count == STEPS)
    dz = zstandard.ZstdDecompressor()
    out = np.empty(header.count * header.frame_bytes + 7, dtype=np.uint8)
    frames = decode_chunk(header, data, dz, out=out, segment=1, offset=99)
    want = b"".join(f.tobytes() for f in assault_frames)
    assert frames.tobytes() in want and not frames.flags.writeable
    parts = zstd_parts(header, data)
    assert parts is not None and parts.count == 4
    fb = header.frame_bytes
    sizes = [
        (parts.start[p + 1] - parts.start[p], (parts.first[p + 1] - parts.first[p]) * fb)
        for p in range(parts.count)
    ]
    body = bytes(data[: parts.start[-1]])
    # the first two parts' frame counts swapped in the table (6+6 -> 8+4): sums still agree
    lying = [(sizes[0][0], 8 * fb), (sizes[1][0], 4 * fb), *sizes[2:]]
    with pytest.raises(CorruptRecord, match=r"segment 1.*99.*content size"):
        decode_chunk(header, body + pack_seek_table(lying), dz, out=out, segment=1, offset=99)


def test_read_into_goes_on_decoding_a_part_a_run_ended_inside(parted, assault_frames):
    # Batches cut a part: the next run continues the part's decoder, even after other
    # reads (which use this thread's other decompressor) ran in between.
    path, ids = parted
    with FrameStore.open(path, readonly=True) as store:
        chunk = [(s, loc) for s, loc in store.frame_locations(ids[2])][:STEPS]
        other = store.frame_locations(ids[0])
        shape = assault_frames[0].shape
        cuts = [0, 4, 9, 10, 17, STEPS]  # inside parts of 6, across them, one frame
        for k, (a, b) in enumerate(itertools.pairwise(cuts)):
            out = np.zeros((b - a, *shape), dtype=np.uint8)
            store.read_into(chunk[a][1], ids[2], [s for s, _ in chunk[a:b]], out)
            for i in range(b - a):
                assert np.array_equal(out[i], assault_frames[2 * STEPS + a + i]), (a, b, i)
            s, loc = other[k * 3]
            assert np.array_equal(store.read_at(loc, ids[0], s), assault_frames[s])


def test_a_store_written_with_the_earlier_atari_preset_reads_and_takes_the_new_one(
    tmp_path, assault_frames
):
    """The Atari preset moved from level 3 in 16-frame parts to level 1 in 32-frame parts
    (issue 19): a store recorded with the old values reads back bit-exact, and a new
    recording appended to it (the preset's values) does too, random and sequential."""
    path = tmp_path / "mixed.store"
    new = {"max_latency": 600.0}  # no chunk cut short by time on a loaded machine
    old = {**new, "codec": "zstd", "chunk_frames": 64, "part_frames": 16, "level": 3}
    steps = 130  # two whole 64-frame chunks and a short one per episode
    with FrameStore.open(path) as store:
        for overrides, first in ((old, 0), (new, steps)):
            with store.recorder("ALE/Assault-v5", overrides=overrides) as rec:
                s = rec.settings
                assert (s.chunk_frames, s.part_frames, s.level) == (
                    (64, 16, 3) if first == 0 else (64, 32, 1)
                )
                rec.begin_episode(seed=first)
                for i in range(steps):
                    rec.record_step(assault_frames[first + i], terminated=i == steps - 1)
                rec.end_episode()
    with FrameStore.open(path, readonly=True) as store:
        eps = store.episodes()
        assert len(eps) == 2
        for ep, first in zip(eps, (0, steps), strict=True):
            seen = list(store.iter_frames(ep.id))
            assert all(np.array_equal(f, assault_frames[first + i]) for i, f in enumerate(seen))
            assert len(seen) == steps
            store.reader.forget()
            for i in (100, 3, 70, 129, 40):
                assert np.array_equal(store.read_frame(ep.id, i), assault_frames[first + i])
    # each run wrote its own segment, in its own part layout
    for segment, firsts in ((1, (0, 16, 32, 48, 64)), (2, (0, 32, 64))):
        chunks = _chunks(path, segment)
        assert {zstd_parts(h, d).first for h, d in chunks if h.count == 64} == {firsts}
