"""``framestore publish`` and reading published stores: to a directory and to a real
S3-compatible server (moto's server on 127.0.0.1, one per module), read back bit-exact
with one ranged read per chunk; damaged, truncated or missing objects and a wrong
manifest checksum each give one clear error."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
from conftest import SMALL_SEGMENTS, assert_one_line_error, record_episodes, run_cli

from framestore import FrameStore
from framestore.disk.segments import list_segment_ids, segment_path
from framestore.errors import (
    ChecksumMismatch,
    CorruptData,
    InvalidInput,
    MissingExtra,
    NotAStore,
    PublishedObjectError,
    SegmentMissing,
)
from framestore.maintenance.publish import publish


@pytest.fixture
def source(tmp_path, assault_frames):
    """Three 10-step Assault episodes over several sealed 1 MiB segments."""
    path = tmp_path / "src.store"
    ids = record_episodes(path, assault_frames, episodes=3, steps=10)
    return path, ids


def assert_same_store(published: FrameStore, original: FrameStore) -> None:
    assert published.episodes() == original.episodes()
    assert published.runs() == original.runs()
    for ep in original.episodes():
        assert published.read_steps(ep.id) == original.read_steps(ep.id)
        for a, b in zip(published.iter_frames(ep.id), original.iter_frames(ep.id), strict=True):
            np.testing.assert_array_equal(a, b)


def chunk_count(store: FrameStore) -> tuple[int, int]:
    """(chunks, segments) the store's live episodes use."""
    chunks = store.catalog.pointers.live_chunks()
    return sum(len(offs) for offs in chunks.values()), len(chunks)


# ----------------------------------------------------------------------------- round trips
def test_publish_to_a_directory_reads_back_bit_exact(source, tmp_path):
    path, _ids = source
    dest = tmp_path / "published"
    result = run_cli("publish", path, dest)
    assert result.exit_code == 0, result.output
    assert "published 3 episode(s), 30 steps, 30 frames" in result.output
    assert not (dest / "framestore.db").exists()
    assert not list(tmp_path.glob(".published.publish-*"))  # no staging directory left

    manifest = json.loads((dest / "manifest.json").read_text())
    # the store's name, never the publisher's path to it
    assert manifest["source"] == "src.store"
    assert str(tmp_path) not in (dest / "manifest.json").read_text()
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} - {
        "manifest.json"
    }
    assert set(manifest["objects"]) == on_disk
    for name, entry in manifest["objects"].items():
        data = (dest / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    segments = sorted(n for n in on_disk if n.startswith("segments/"))
    assert len(segments) >= 2
    for name in segments:  # sealed segments byte for byte
        assert (dest / name).read_bytes() == (path / name).read_bytes()

    with FrameStore.open(dest, readonly=True) as pub, FrameStore.open(path, readonly=True) as st:
        assert pub.published and not st.published
        assert_same_store(pub, st)
        assert pub.episode_bytes(1) == st.episode_bytes(1)
    listed = run_cli("ls", dest, "--json")
    assert listed.exit_code == 0 and len(json.loads(listed.output)["episodes"]) == 3


def test_publish_to_s3_reads_back_with_one_ranged_read_per_chunk(source, s3, tmp_path):
    path, _ids = source
    url = f"s3://{s3.bucket()}/runs/store-a"
    with FrameStore.open(path, readonly=True) as st:
        report = publish(st, url, storage_options=s3.storage_options)
        assert (report.episodes, report.steps, report.frames) == (3, 30, 30)
        chunks, segments = chunk_count(st)
        with FrameStore.open(url, readonly=True, storage_options=s3.storage_options) as pub:
            assert pub.location == url and pub.published
            assert_same_store(pub, st)
            # Each chunk fetched once (one range: header, payload, CRC) plus one header
            # read per segment: never a whole segment object.
            assert pub.reader.source.requests == chunks + segments
    # The CLI reads the endpoint from AWS_ENDPOINT_URL like any AWS client.
    result = run_cli("export", url, "--episode", 2, "-o", tmp_path / "two.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "two.npz") as z, FrameStore.open(path, readonly=True) as st:
        np.testing.assert_array_equal(z["frames"], np.stack(st.read_frames(2)))
    again = run_cli("publish", path, f"s3://{s3.bucket()}/cli")
    assert again.exit_code == 0, again.output
    listed = run_cli("ls", url, "--json")
    assert listed.exit_code == 0 and len(json.loads(listed.output)["episodes"]) == 3
    checked = run_cli("verify", url)  # every object against the manifest, every chunk read
    assert checked.exit_code == 0 and checked.output.startswith("ok:"), checked.output


def test_publish_while_recording_publishes_finished_episodes_in_sealed_segments(
    tmp_path, assault_frames
):
    path = tmp_path / "live.store"
    with FrameStore.open(path) as st:
        rec = st.recorder("ALE/Assault-v5", overrides=SMALL_SEGMENTS)
        try:
            for e in range(3):
                rec.begin_episode(seed=e)
                for i in range(10):
                    rec.record_step(assault_frames[e * 10 + i], reward=1.0, terminated=i == 9)
                rec.end_episode()
            live = rec.begin_episode(seed=9)
            for i in range(5):
                rec.record_step(assault_frames[30 + i], reward=1.0)
            rec.flush()
            with FrameStore.open(path, readonly=True) as reader:
                report = publish(reader, tmp_path / "during")
            assert report.skipped[live].startswith("being recorded")
            published = {1, 2, 3} - set(report.skipped)
            assert published and report.episodes == len(published)
            assert all("not sealed" in report.skipped[e] for e in {1, 2, 3} - published)
        finally:
            rec.close()
    with FrameStore.open(tmp_path / "during", readonly=True) as pub:
        assert {e.id for e in pub.episodes()} == published
        with FrameStore.open(path, readonly=True) as st:
            for eid in published:
                for a, b in zip(pub.iter_frames(eid), st.iter_frames(eid), strict=True):
                    np.testing.assert_array_equal(a, b)
    with FrameStore.open(path, readonly=True) as st:
        after = publish(st, tmp_path / "after")
    assert after.episodes == 4 and not after.skipped


def test_publish_refuses_a_used_destination_and_a_published_source(source, tmp_path):
    path, _ids = source
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    assert "not empty" in assert_one_line_error(run_cli("publish", path, tmp_path / "used"))
    assert run_cli("publish", path, tmp_path / "p").exit_code == 0
    line = assert_one_line_error(run_cli("publish", tmp_path / "p", tmp_path / "q"))
    assert "published store already" in line
    with pytest.raises(InvalidInput, match="read-only"):
        FrameStore.open(tmp_path / "p")
    assert not (tmp_path / "q").exists() and not list(tmp_path.glob(".q.publish-*"))


def test_publish_never_touches_a_sibling_named_like_its_staging(source, tmp_path):
    """An earlier build staged into DEST.partial and deleted whatever was there first."""
    path, _ids = source
    mine = tmp_path / "out.partial"
    mine.mkdir()
    (mine / "important.txt").write_text("keep me")
    assert run_cli("publish", path, tmp_path / "out").exit_code == 0
    assert (mine / "important.txt").read_text() == "keep me"
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_a_remote_destination_with_leftovers_is_named_and_kept(source, s3):
    path, _ids = source
    bucket = s3.bucket()
    fs = s3.fs()
    _put(fs, f"{bucket}/left/segments/seg-000001.fseg", b"half")  # a killed publish's
    _put(fs, f"{bucket}/left/catalogue/runs.parquet", b"x")
    line = assert_one_line_error(run_cli("publish", path, f"s3://{bucket}/left"))
    assert "holds no manifest.json (found catalogue, segments)" in line, line
    assert "interrupted publish" in line
    assert fs.cat_file(f"{bucket}/left/segments/seg-000001.fseg") == b"half"
    assert run_cli("publish", path, f"s3://{bucket}/done").exit_code == 0
    line = assert_one_line_error(run_cli("publish", path, f"s3://{bucket}/done"))
    assert "is a published store already" in line


def test_a_segment_removed_while_publishing_is_named_and_nothing_is_left(source, tmp_path):
    """What a gc that deletes a segment behind a running publish does to it (it used to
    stop with a bare FileNotFoundError)."""
    path, _ids = source
    last = segment_path(path, max(list_segment_ids(path)))
    kept = last.read_bytes()

    def remove_once(done, total):
        if last.exists():
            last.unlink()

    with FrameStore.open(path, readonly=True) as st:
        with pytest.raises(InvalidInput, match=r"was removed while publishing .* publish again"):
            publish(st, tmp_path / "p", progress=remove_once)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.store"]  # nothing half-made
    last.write_bytes(kept)
    assert run_cli("publish", path, tmp_path / "p").exit_code == 0


def test_a_url_the_backend_refuses_is_one_line_without_the_password(s3):
    """Errors of the storage backend itself (here botocore refusing the bucket name that
    the URL's user:password made) were a traceback that showed the password."""
    url = "s3://reader:s3cret@Bad_Bucket!/runs"
    with pytest.raises(NotAStore, match="cannot read manifest.json: ParamValidationError") as err:
        FrameStore.open(url, readonly=True, storage_options=s3.storage_options)
    assert "s3cret" not in str(err.value) and "s3://***@Bad_Bucket!/runs" in str(err.value)
    line = assert_one_line_error(run_cli("ls", url), 2)
    assert "s3cret" not in line and "ParamValidationError" in line


def test_publish_to_s3_without_credentials_is_one_line(source, s3, monkeypatch):
    """Issue 18, defect 5: botocore's own errors (no credentials; a bucket name it
    refuses) were a 60-line traceback from ``publish``; ``ls`` already said one line."""
    import s3fs

    bucket = s3.bucket()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    path, _ = source
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        line = assert_one_line_error(run_cli("publish", path, f"s3://{bucket}/runs"), 6)
        assert f"s3://{bucket}/runs" in line and "NoCredentialsError" in line
        line = assert_one_line_error(run_cli("publish", path, "s3://u:s3cret@Bad_Bucket!/x"), 6)
        assert "ParamValidationError" in line and "s3cret" not in line
    finally:  # no client without credentials may outlive the test in s3fs's cache
        s3fs.S3FileSystem.clear_instance_cache()


# ----------------------------------------------------------------------------- damage
def _put(fs, key: str, data: bytes) -> None:
    with fs.open(key, "wb") as fp:
        fp.write(data)


def _first_chunk(path) -> tuple[int, int]:
    with FrameStore.open(path, readonly=True) as st:
        return st.frame_locations(1)[0][1][:2]


def test_flipped_byte_in_a_published_segment_names_segment_and_offset(source, s3, tmp_path):
    path, _ids = source
    seg, off = _first_chunk(path)
    key = f"{s3.bucket()}/flip"
    with FrameStore.open(path, readonly=True) as st:
        publish(st, f"s3://{key}", storage_options=s3.storage_options)
    fs = s3.fs()
    name = f"{key}/segments/seg-{seg:06d}.fseg"
    data = bytearray(fs.cat_file(name))
    data[off + 100] ^= 0x01
    _put(fs, name, bytes(data))

    with FrameStore.open(f"s3://{key}", readonly=True, storage_options=s3.storage_options) as pub:
        with pytest.raises(ChecksumMismatch) as err:
            pub.read_frame(1, 0)
    assert (err.value.segment, err.value.offset) == (seg, off)
    result = run_cli("export", f"s3://{key}", "--episode", 1, "-o", tmp_path / "x.npz")
    line = assert_one_line_error(result, code=5)
    assert f"segment {seg} at offset {off}: checksum mismatch" in line
    assert not (tmp_path / "x.npz").exists()


DAMAGE = [
    "truncated segment",
    "missing segment",
    "truncated catalogue",
    "missing catalogue",
    "wrong manifest checksum",
    "missing manifest",
]


@pytest.mark.parametrize("backend", ["dir", "s3"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_published_store_gives_one_clear_error(source, s3, tmp_path, backend, damage):
    path, _ids = source
    seg, _off = _first_chunk(path)
    if backend == "s3":
        fs, root = s3.fs(), f"{s3.bucket()}/d"
        url, options = f"s3://{root}", s3.storage_options
    else:
        import fsspec

        fs, root = fsspec.filesystem("file"), str(tmp_path / "d")
        url, options = root, None
    with FrameStore.open(path, readonly=True) as st:
        publish(st, url, storage_options=options)
    segment = f"segments/seg-{seg:06d}.fseg"
    manifest = json.loads(fs.cat_file(f"{root}/manifest.json"))
    if damage == "truncated segment":
        _put(fs, f"{root}/{segment}", fs.cat_file(f"{root}/{segment}")[:-100])
        expected, code = (CorruptData, "the manifest says"), 5
    elif damage == "missing segment":
        fs.rm_file(f"{root}/{segment}")
        expected, code = (SegmentMissing, "segment file missing"), 5
    elif damage == "truncated catalogue":
        _put(
            fs,
            f"{root}/catalogue/steps.parquet",
            fs.cat_file(f"{root}/catalogue/steps.parquet")[:50],
        )
        expected, code = (PublishedObjectError, "catalogue/steps.parquet: 50 bytes"), 5
    elif damage == "missing catalogue":
        fs.rm_file(f"{root}/catalogue/episodes.parquet")
        expected, code = (PublishedObjectError, "episodes.parquet: object missing"), 5
    elif damage == "wrong manifest checksum":
        manifest["objects"]["catalogue/steps.parquet"]["sha256"] = "0" * 64
        _put(fs, f"{root}/manifest.json", json.dumps(manifest).encode())
        expected, code = (PublishedObjectError, "steps.parquet: sha256 mismatch"), 5
    else:
        fs.rm_file(f"{root}/manifest.json")
        expected, code = (NotAStore, "no manifest.json"), 2
    error, words = expected

    def read_all():
        with FrameStore.open(url, readonly=True, storage_options=options) as pub:
            for ep in pub.episodes():
                pub.read_frames(ep.id)

    with pytest.raises(error, match=words):
        read_all()
    out = tmp_path / "out.npz"
    line = assert_one_line_error(run_cli("export", url, "--episode", 1, "-o", out), code=code)
    assert words in line
    assert not out.exists()


def test_hostile_manifest_names_are_refused(source, tmp_path):
    path, _ids = source
    with FrameStore.open(path, readonly=True) as st:
        publish(st, tmp_path / "h")
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    manifest["objects"]["../../etc/passwd"] = {"bytes": 1, "sha256": "0" * 64}
    (tmp_path / "h" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PublishedObjectError, match="unexpected object name"):
        FrameStore.open(tmp_path / "h", readonly=True)


def test_a_segment_the_manifest_does_not_list_is_not_read(source, s3):
    path, _ids = source
    seg, _off = _first_chunk(path)
    key = f"{s3.bucket()}/unlisted"
    with FrameStore.open(path, readonly=True) as st:
        publish(st, f"s3://{key}", storage_options=s3.storage_options)
    fs = s3.fs()
    manifest = json.loads(fs.cat_file(f"{key}/manifest.json"))
    del manifest["objects"][f"segments/seg-{seg:06d}.fseg"]
    _put(fs, f"{key}/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(PublishedObjectError, match=f"segment {seg}, which the manifest does not"):
        FrameStore.open(f"s3://{key}", readonly=True, storage_options=s3.storage_options)


# ----------------------------------------------------------------------------- extras
def test_missing_extras_name_the_install_command(source, tmp_path, monkeypatch):
    path, _ids = source
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    with FrameStore.open(path, readonly=True) as st:
        with pytest.raises(MissingExtra, match=r"pip install 'framestore\[s3\]'"):
            publish(st, tmp_path / "p")
    line = assert_one_line_error(run_cli("publish", path, tmp_path / "p"))
    assert "publish needs pyarrow: pip install 'framestore[s3]'" in line
    line = assert_one_line_error(
        run_cli("export", path, "--format", "parquet", "-o", tmp_path / "pq")
    )
    assert "pip install 'framestore[hf]'" in line
    assert not (tmp_path / "p").exists() and not (tmp_path / "pq").exists()
    # ray not installed: neither ray nor ray.data imports (an earlier test of the session
    # may have imported ray.data, which import_module would then hand back as it is)
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    import framestore.ray

    with pytest.raises(MissingExtra, match=r"needs ray: pip install 'framestore\[ray\]'"):
        framestore.ray.read_store(path)


def test_publish_refuses_a_destination_inside_a_store(source, tmp_path):
    """Export refused an output inside a store; publish wrote into it (issue 18, the
    overwrite rules by format): one rule for every output now (README, "Outputs")."""
    path, _ = source
    line = assert_one_line_error(run_cli("publish", path, path / "pub"), 2)
    assert "inside the store" in line
    assert not (path / "pub").exists()
    assert not [p for p in path.iterdir() if p.name.startswith(".pub.publish-")]
