"""Reading a published store someone else prepared, or through a server that misbehaves
(issue 23, items 2 and 3 and the timeout item): every object is read at most to its
stated size + 1 byte, never through a link or from a FIFO in a local directory, each
request within the timeout; catalogue rows are checked against the manifest's counts
before they are loaded. ``ls`` and ``info`` never open the steps table (they count from
the episode totals), so a hostile steps object is met by the verbs that read steps:
``verify`` and ``export`` (tests/reliability/test_reliability_published_steps.py: the bomb).

Every command runs in a child process with an address-space limit and a timeout, so a
regression fails the test instead of taking the machine's memory or hanging the run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import QuietHTTPServer, assert_one_line_error, record_episodes

REPO = str(Path(__file__).resolve().parents[2])
MEMORY_LIMIT = 3 << 30  # bytes of address space a command may map (imports take ~1.5 GiB)


@pytest.fixture(scope="module")
def template(tmp_path_factory, assault_frames):
    """A store of two 6-step episodes, published to a directory."""
    root = tmp_path_factory.mktemp("pub")
    record_episodes(root / "s.store", assault_frames, episodes=2, steps=6)
    result = cli("publish", root / "s.store", root / "pub")
    assert result.returncode == 0, result.stderr
    return root / "pub"


@pytest.fixture
def pub(template, tmp_path):
    path = tmp_path / "pub"
    shutil.copytree(template, path)
    return path


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def steps_readers(pub: Path, tmp_path: Path) -> list[list]:
    """Commands that read the steps table of ``pub``."""
    return [["verify", pub], ["export", pub, "--episode", 1, "-o", tmp_path / "x.npz"]]


def cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """``framestore ARGS`` in a child with bounded memory and time."""
    return subprocess.run(
        [sys.executable, "-m", "tools", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": REPO},
        preexec_fn=_limit_memory,
    )


def rewrite_manifest(pub: Path, change) -> None:
    manifest = json.loads((pub / "manifest.json").read_text())
    change(manifest)
    (pub / "manifest.json").write_text(json.dumps(manifest))


# --------------------------------------------------------------------------- local files
def test_a_manifest_linked_to_dev_zero_is_refused(pub):
    (pub / "manifest.json").unlink()
    os.symlink("/dev/zero", pub / "manifest.json")
    for verb in ("ls", "info", "verify"):
        line = assert_one_line_error(cli(verb, pub), code=5)
        assert "manifest.json" in line and "symbolic link" in line, line


@pytest.mark.parametrize("name", ["manifest.json", "catalogue/steps.parquet"])
def test_a_fifo_in_a_published_directory_hangs_nothing(pub, name, tmp_path):
    (pub / name).unlink()
    os.mkfifo(pub / name)
    readers = [["ls", pub]] if name == "manifest.json" else steps_readers(pub, tmp_path)
    for args in readers:
        line = assert_one_line_error(cli(*args, timeout=60), code=5)
        assert "not a regular file" in line, line


def test_a_catalogue_object_larger_than_the_manifest_says_is_not_read_whole(pub, tmp_path):
    steps = pub / "catalogue" / "steps.parquet"
    with open(steps, "r+b") as fp:  # 8 GiB, sparse: what the attacker made
        fp.truncate(8 << 30)
    for args in steps_readers(pub, tmp_path):
        line = assert_one_line_error(cli(*args, timeout=60), code=5)
        assert "steps.parquet" in line and "more than" in line, line
    assert cli("ls", pub, timeout=60).returncode == 0  # it never opens the steps table


def test_a_linked_segment_is_reported_by_verify_not_followed(pub, tmp_path):
    seg = sorted((pub / "segments").iterdir())[0]
    outside = tmp_path / "elsewhere.fseg"
    shutil.move(seg, outside)
    os.symlink(outside, seg)
    result = cli("verify", pub)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "symbolic link" in result.stdout or "not a regular file" in result.stdout


# --------------------------------------------------------------------------- row counts
def test_a_manifest_without_counts_is_refused(pub):
    rewrite_manifest(pub, lambda m: m.pop("steps"))
    line = assert_one_line_error(cli("ls", pub), code=5)
    assert "no count of steps" in line, line


# --------------------------------------------------------------------------- HTTP
class _Hostile(SimpleHTTPRequestHandler):
    """Serves a directory; HEAD answers the true length, but GET of ``endless`` paths
    sends zeros for ever (no length, no range), and GET of ``stalled`` paths never
    answers."""

    endless: set[str] = set()
    stalled: set[str] = set()
    directory_served = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=self.directory_served, **kwargs)

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        name = self.path.split("/pub/", 1)[-1]
        if name in self.stalled:
            time.sleep(600)  # the client gives up first; the daemon thread dies at exit
            return
        if name not in self.endless:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        zeros = b"\0" * 65536
        try:
            while True:
                self.wfile.write(zeros)
        except OSError:
            pass


@contextmanager
def hostile_server(root: Path, *, endless=(), stalled=()):
    handler = type(
        "H",
        (_Hostile,),
        {"endless": set(endless), "stalled": set(stalled), "directory_served": str(root)},
    )
    server = QuietHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/pub"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "name", ["manifest.json", "catalogue/steps.parquet", "catalogue/episodes.parquet"]
)
def test_an_endless_http_answer_costs_the_stated_size_not_gigabytes(pub, name, tmp_path):
    with hostile_server(pub.parent, endless=[name]) as url:
        if name == "catalogue/steps.parquet":  # ls never reads it; export does
            result = cli("export", url, "--episode", 1, "-o", tmp_path / "x.npz", timeout=90)
        else:
            result = cli("ls", url, timeout=90)
    line = assert_one_line_error(result, code=5)
    assert name in line and ("too large" in line or "more than" in line), line


def test_an_endless_answer_to_a_segment_read_is_cut_at_the_chunk(pub, tmp_path):
    seg = sorted(p.name for p in (pub / "segments").iterdir())[0]
    with hostile_server(pub.parent, endless=[f"segments/{seg}"]) as url:
        result = cli("export", url, "--episode", 1, "-o", tmp_path / "x.npz", timeout=90)
    line = assert_one_line_error(result, code=5)  # zeros where its header should be
    assert "segment 1" in line, line
    assert not (tmp_path / "x.npz").exists()


def test_a_stalled_server_is_one_line_after_the_timeout(pub):
    with hostile_server(pub.parent, stalled=["catalogue/runs.parquet"]) as url:
        t0 = time.monotonic()
        result = cli("--timeout", "2", "ls", url, timeout=120)
        took = time.monotonic() - t0
    line = assert_one_line_error(result, code=5)
    assert "within 2 s" in line and "timeout" in line, line
    assert took < 100  # before: 302 s (aiohttp's 5-minute default)


def test_the_timeout_option_is_checked(pub):
    assert_one_line_error(cli("--timeout", "-1", "ls", pub), code=2)
    with socket.socket() as s:  # an address nothing answers on quickly: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli("--timeout", "5", "ls", f"http://127.0.0.1:{port}/pub", timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
