"""``verify`` of a published store, at a URL on a real S3-compatible server (moto's,
on 127.0.0.1) and in a local directory: every object against the manifest's size and
SHA-256, and every frame pointer read through the store (chunk CRC, framing, keys).
Damage in one segment object names the object, the chunk and the steps that lose
frames; ``--quick`` skips the whole-object hashes."""

from __future__ import annotations

import json
import os

import pytest
from conftest import SMALL_SEGMENTS, record_episodes, run_cli

from framestore import FrameStore
from framestore.disk.segments import SEGMENT_OVERHEAD, relative_segment_path
from framestore.errors import InvalidInput
from framestore.maintenance.publish import publish
from framestore.state.bookkeeping import chunk_bytes
from tools.verify import verify

STEPS = 10


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, assault_frames):
    path = tmp_path_factory.mktemp("vp") / "src.store"
    record_episodes(path, assault_frames, episodes=3, steps=STEPS, overrides=SMALL_SEGMENTS)
    with FrameStore.open(path, readonly=True) as st:
        chunks = st.catalog.pointers.live_chunks()
        seg, off, _slot = st.frame_locations(2)[4][1]
        steps = [s for s, loc in st.frame_locations(2) if loc[:2] == (seg, off)]
    assert len(chunks) >= 2  # several segments
    return path, seg, off, steps


def _published_on_s3(s3, path) -> str:
    url = f"s3://{s3.bucket()}/store"
    with FrameStore.open(path, readonly=True) as st:
        publish(st, url, storage_options=s3.storage_options)
    return url


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


def test_a_clean_published_store_verifies_at_its_url(recorded, s3):
    path, _seg, _off, _steps = recorded
    url = _published_on_s3(s3, path)
    with FrameStore.open(url, readonly=True, storage_options=s3.storage_options) as pub:
        report = verify(pub)
    assert report.ok, [str(p) for p in report.problems]
    assert report.frames_checked == report.steps_checked == 3 * STEPS
    assert report.episodes_checked == 3 and report.segments_checked >= 2
    # the URL reads every chunk a step points to, once, and counts its bytes (it said
    # "0 B"); a local scan also counts each file's header, seal and, from format 3, the
    # records that describe episodes, which a URL has no need to read
    with FrameStore.open(path, readonly=True) as st:
        chunks: dict[int, set[int]] = {}
        for ep in st.episodes():
            for _step, loc in st.frame_locations(ep.id):
                if loc is not None:
                    chunks.setdefault(loc[0], set()).add(loc[1])
        assert report.records_checked == sum(len(offs) for offs in chunks.values())
        assert report.bytes_checked == sum(chunk_bytes(st, s, list(o)) for s, o in chunks.items())
    local = verify(path)
    assert (
        0 < report.bytes_checked <= local.bytes_checked - local.segments_checked * SEGMENT_OVERHEAD
    )
    result = run_cli("verify", url, "--json")  # the endpoint from AWS_ENDPOINT_URL
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"] is True


def test_a_flipped_byte_at_the_url_names_object_chunk_and_steps(recorded, s3):
    path, seg, off, steps = recorded
    url = _published_on_s3(s3, path)
    fs = s3.fs()
    name = f"{url[5:]}/{relative_segment_path(seg)}"
    fs.pipe_file(name, _flip(fs.cat_file(name), off + 200))

    result = run_cli("verify", url)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(
        x.startswith(f"checksum: {relative_segment_path(seg)}: sha256 mismatch") for x in lines
    ), lines
    frame_line = next(x for x in lines if "episode 2" in x)
    assert frame_line.startswith("checksum: checksum mismatch"), frame_line
    assert f"segment {seg}, offset {off}, episode 2" in frame_line
    # the chunk's steps (how many depends on where the writer cut it: often 4, maybe 1)
    named = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
    assert frame_line.endswith(f"episode 2, steps {named}]"), frame_line

    quick = run_cli("verify", url, "--quick", "--json")
    assert quick.exit_code == 1
    problems = json.loads(quick.output)["problems"]
    assert [(p["kind"], p["segment"], p["offset"], p["episode"], p["steps"]) for p in problems] == [
        ("checksum", seg, off, 2, steps)
    ]


def test_a_missing_segment_object_is_named(recorded, s3):
    path, seg, _off, _steps = recorded
    url = _published_on_s3(s3, path)
    s3.fs().rm_file(f"{url[5:]}/{relative_segment_path(seg)}")
    report = verify(url)
    kinds = {(p.kind, p.segment) for p in report.problems}
    assert ("missing segment", seg) in kinds and {k for k, _ in kinds} == {"missing segment"}
    assert any(p.episode is not None and p.steps for p in report.problems)  # who loses frames


def test_a_local_published_directory_is_checked_against_its_manifest(recorded, tmp_path):
    path, seg, off, _steps = recorded
    dest = tmp_path / "pub"
    with FrameStore.open(path, readonly=True) as st:
        publish(st, dest)
    assert verify(dest).ok
    # a catalogue table replaced by another valid one: only the manifest can tell
    table = dest / "catalogue" / "chunks.parquet"
    os.chmod(table, 0o644)
    table.write_bytes(table.read_bytes())  # same bytes: still fine
    assert verify(dest).ok
    segment = dest / relative_segment_path(seg)
    os.chmod(segment, 0o644)
    segment.write_bytes(_flip(segment.read_bytes(), off + 200))
    kinds = sorted(p.kind for p in verify(dest).problems)
    assert kinds == ["checksum", "checksum"], kinds  # the object's hash and the chunk's CRC
    assert [p.kind for p in verify(dest, quick=True).problems] == ["checksum"]


def test_checking_objects_of_a_store_that_is_not_published_is_refused(recorded):
    path, *_ = recorded
    with FrameStore.open(path, readonly=True) as st, pytest.raises(InvalidInput):
        st.check_published_objects()
