"""A published store read over plain HTTP from a real server on 127.0.0.1 (fsspec's
``http://``): one ranged request per chunk, bit-exact; a server that ignores Range
requests is refused with one clear error (never a whole segment per chunk, never pixels
from the wrong bytes); and a password typed into the URL never reaches a message, the
store's location or the CLI's output."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SMALL_SEGMENTS, assert_one_line_error, http_server, record_episodes, run_cli

from framestore import FrameStore
from framestore.errors import CorruptRecord, InvalidInput, NotAStore
from framestore.maintenance.publish import publish

SECRET = "s3cret-token"


@pytest.fixture(scope="module")
def published(tmp_path_factory, assault_frames):
    """A recorded store (3 episodes x 10 steps, several segments) and its published copy
    in a directory an HTTP server can serve."""
    root = tmp_path_factory.mktemp("http")
    source = root / "s.store"
    record_episodes(source, assault_frames, episodes=3, steps=10, overrides=SMALL_SEGMENTS)
    with FrameStore.open(source, readonly=True) as st:
        publish(st, root / "pub")
    return root, source


def test_a_published_store_reads_over_http_bit_exact_one_request_per_chunk(published, tmp_path):
    root, source = published
    with http_server(root) as host:
        url = f"http://reader:{SECRET}@{host}/pub"
        with (
            FrameStore.open(url, readonly=True) as pub,
            FrameStore.open(source, readonly=True) as st,
        ):
            assert pub.location == f"http://***@{host}/pub" and SECRET not in repr(pub)
            for ep in st.episodes():
                assert pub.read_steps(ep.id) == st.read_steps(ep.id)
                for a, b in zip(pub.iter_frames(ep.id), st.iter_frames(ep.id), strict=True):
                    np.testing.assert_array_equal(a, b)
            chunks = st.catalog.pointers.live_chunks()
            n_chunks = sum(len(offs) for offs in chunks.values())
            # each chunk once, plus one file-header read per segment
            assert pub.reader.source.requests == n_chunks + len(chunks)
        listed = run_cli("ls", url)
        assert listed.exit_code == 0 and SECRET not in listed.output, listed.output
        exported = run_cli("export", url, "--episode", 2, "-o", tmp_path / "two.npz")
        assert exported.exit_code == 0 and SECRET not in exported.output, exported.output
    with np.load(tmp_path / "two.npz") as z, FrameStore.open(source, readonly=True) as st:
        np.testing.assert_array_equal(z["frames"], np.stack(st.read_frames(2)))


def test_a_server_that_ignores_ranges_is_refused_with_one_clear_error(published, tmp_path):
    root, _source = published
    with http_server(root, ranges=False) as host:
        url = f"http://reader:{SECRET}@{host}/pub"
        with FrameStore.open(url, readonly=True) as pub:  # the catalogue is whole objects
            assert len(pub.episodes()) == 3
            with pytest.raises(CorruptRecord, match="honour HTTP Range") as err:
                pub.read_frame(1, 0)
            message = str(err.value)
            assert f"http://***@{host}/pub/segments/seg-" in message and SECRET not in message
        line = assert_one_line_error(
            run_cli("export", url, "--episode", 1, "-o", tmp_path / "x.npz"), code=5
        )
        assert "Range" in line and SECRET not in line
    assert not (tmp_path / "x.npz").exists()


def test_a_url_that_is_no_store_names_it_without_the_password(published):
    root, _source = published
    with http_server(root) as host:
        url = f"http://reader:{SECRET}@{host}/nothing-here"
        with pytest.raises(NotAStore) as err:
            FrameStore.open(url, readonly=True)
        assert f"http://***@{host}/nothing-here" in str(err.value)
        assert SECRET not in str(err.value)
        line = assert_one_line_error(run_cli("ls", url), code=2)
        assert "***@" in line and SECRET not in line
        with pytest.raises(InvalidInput, match="read-only") as err:  # opened for writing
            FrameStore.open(f"http://reader:{SECRET}@{host}/pub")
        assert "***@" in str(err.value) and SECRET not in str(err.value)
