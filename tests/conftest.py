"""Shared fixtures: real ale-py frames captured once per session, stores in tmp_path,
and a guard that fails any test leaving a writer, sink or hub thread running."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Child processes the tests start (kill trials, CLI runs, storage processes) import this
# checkout, whatever their working directory and whatever else is installed.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_REPO, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
)
# Ray (test_ray.py) binds its processes to the machine's address unless told this is a
# local-only cluster: keep every Ray connection on 127.0.0.1. Read when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# No usage reporting from the test clusters: Ray Data's metrics poller would otherwise
# query a Prometheus that is not there and log the failure to a closed stream at exit.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")

OUR_THREADS = ("framestore", "telemetry")


def _ours() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.is_alive() and t.name.startswith(OUR_THREADS)]


def _children() -> set[int]:
    """Live child processes, without multiprocessing's resource tracker (it lives as long
    as this process, by design)."""
    import psutil

    out = set()
    for p in psutil.Process().children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                p.cmdline()
            ):
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, waiting to be reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def shm_blocks(pid: int | None = None) -> list[str]:
    """Shared memory blocks created by process ``pid`` (default: this one): storage rings
    and counters."""
    from framestore.write.process._ring import NAME_PREFIX, SHM_DIR

    prefix = f"{NAME_PREFIX}{os.getpid() if pid is None else pid}_"
    try:
        return [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    except FileNotFoundError:
        return []


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves a framestore/telemetry thread running (a missing close()),
    a child process (a storage process) or a shared memory block behind."""
    before = set(_ours())
    children = _children()
    yield
    deadline = time.monotonic() + 5.0
    leaked = [t for t in _ours() if t not in before]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = [t for t in _ours() if t not in before]
    assert not leaked, f"test left threads running: {[t.name for t in leaked]}"
    procs = _children() - children
    while procs and time.monotonic() < deadline:
        time.sleep(0.02)
        procs = _children() - children
    assert not procs, f"test left child processes running: {sorted(procs)}"
    assert not shm_blocks(), f"test left shared memory behind: {shm_blocks()}"


#: The writer placements a recording test runs against (``Settings.writer``).
WRITERS = ("thread", "process")


def writer_overrides(writer: str, start: str = "fork") -> dict:
    """Recorder overrides for a placement: in-process tests start storage processes with
    ``fork`` (fast); spawn is covered by its own tests and by subprocess children."""
    return {} if writer == "thread" else {"writer": "process", "writer_start": start}


@pytest.fixture
def writer(request, tmp_path_factory, monkeypatch) -> str:
    """The placement a test records with (``@pytest.mark.parametrize("writer", WRITERS,
    indirect=True)``): ``process`` is set in a presets file (``$XDG_CONFIG_HOME``), so
    it also reaches the CLI and child processes the test starts."""
    name = getattr(request, "param", "thread")
    if name != "thread":
        home = tmp_path_factory.mktemp("xdg")
        (home / "framestore").mkdir()
        (home / "framestore" / "presets.toml").write_text(
            f'[default]\nwriter = "process"\nwriter_start = "{WRITER_START}"\n'
        )
        monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return name


#: How storage processes of tests that record through the presets file start.
WRITER_START = "fork"


def capture_frames(env_id: str, n: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """Frames of a seeded random-policy run: ``env.render()`` after reset and each step."""
    from framestore.envs import make_env

    env = make_env(env_id)
    try:
        env.reset(seed=seed)
        env.action_space.seed(seed)
        frames = [env.render()]
        actions = []
        while len(frames) < n:
            a = env.action_space.sample()
            _, _, term, trunc, _ = env.step(a)
            actions.append(a)
            frames.append(env.render())
            if term or trunc:
                env.reset()
        return frames, actions
    finally:
        env.close()


@pytest.fixture(scope="session")
def assault_frames() -> list[np.ndarray]:
    """300 real 210x160x3 frames from ALE/Assault-v5 (seed 0, random policy)."""
    frames, _ = capture_frames("ALE/Assault-v5", 300, seed=0)
    return frames


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "runs.store"


@pytest.fixture
def store(store_path):
    from framestore import FrameStore

    st = FrameStore.open(store_path)
    yield st
    st.close()


# Raw chunks of 4 Atari frames (~400 KB) in 1 MiB segments (the smallest allowed): a
# 14-step episode spans parts of three segments, so a few episodes give several sealed ones.
SMALL_SEGMENTS = {"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20}


def record_episodes(
    path,
    frames,
    *,
    episodes=3,
    steps=10,
    overrides=SMALL_SEGMENTS,
    reward=lambda i: 1.0,
    action=lambda i: None if i == 0 else i % 7,
):
    """Record ``episodes`` Assault episodes into the store at ``path``; episode e step i
    holds ``frames[e * steps + i]`` and the last step of each is terminal. Returns ids."""
    from framestore import FrameStore

    with FrameStore.open(path) as store:
        rec = store.recorder("ALE/Assault-v5", overrides=overrides)
        ids = []
        try:
            for e in range(episodes):
                ids.append(rec.begin_episode(seed=e))
                for i in range(steps):
                    rec.record_step(
                        frames[e * steps + i],
                        action=action(i),
                        reward=reward(i),
                        terminated=i == steps - 1,
                    )
                rec.end_episode()
        finally:
            rec.close()
    return ids


# --------------------------------------------------------------------------- CLI helpers
def run_cli(*args, **kwargs):
    """Invoke the ``framestore`` CLI in-process; never a traceback for the user."""
    from click.testing import CliRunner

    from tools.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], **kwargs)
    # An uncaught exception would be a traceback for the user.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    return result


def assert_one_line_error(result, code: int = 2) -> str:
    """The command failed with ``code`` and said why in exactly one line on stderr
    (warnings aside). Takes a click ``Result`` or a ``subprocess.CompletedProcess``."""
    if hasattr(result, "returncode"):
        exit_code, stderr, output = result.returncode, result.stderr, result.stdout + result.stderr
    else:
        exit_code, stderr, output = result.exit_code, result.stderr, result.output
    assert "Traceback" not in output, output
    assert exit_code == code, (exit_code, output)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("framestore: error: ")]
    others = [
        ln for ln in lines if not ln.startswith(("framestore: error: ", "framestore: warning: "))
    ]
    assert len(errors) == 1 and not others, stderr
    return errors[0]


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.002) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)


# --------------------------------------------------------------------------- S3 (moto)
class S3Endpoint:
    """A real S3-compatible endpoint on 127.0.0.1 (moto's server), for one test module."""

    def __init__(self, url: str):
        self.url = url
        self.storage_options = {
            "key": "test",
            "secret": "test",
            "client_kwargs": {"endpoint_url": url},
        }

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def bucket(self) -> str:
        """A new, empty bucket's name (moto keeps its buckets per process, not per server:
        names never repeat)."""
        import uuid

        name = f"bucket-{uuid.uuid4().hex[:16]}"
        self.fs().mkdir(name)
        return name


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 (a real HTTP endpoint, not a client mock), started
    once per module and stopped after it. The AWS_* variables point every client (the
    CLI included) at it while the module runs."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield S3Endpoint(url)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


# --------------------------------------------------------------------------- HTTP
def _range_handler(directory: str, ranges: bool):
    """A handler serving ``directory``; with ``ranges``, single byte ranges
    (``Range: bytes=a-b``) as object stores and web servers serve them; without, the
    whole file, as Python's own ``http.server`` does."""
    import io
    import re
    from http.server import SimpleHTTPRequestHandler

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def log_message(self, *args):  # quiet: one line per request otherwise
            pass

        def send_head(self):
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
            path = self.translate_path(self.path)
            if not ranges or match is None or not os.path.isfile(path):
                return super().send_head()
            size = os.path.getsize(path)
            start = int(match[1])
            stop = min(size - 1, int(match[2])) if match[2] else size - 1
            if start >= size:
                self.send_error(416)
                return None
            with open(path, "rb") as fp:
                fp.seek(start)
                data = fp.read(stop - start + 1)
            self.send_response(206)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Range", f"bytes {start}-{stop}/{size}")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return io.BytesIO(data)

    return Handler


def _quiet_server_class():
    import sys
    from http.server import ThreadingHTTPServer

    class Quiet(ThreadingHTTPServer):
        """A client that hangs up once it has what it asked for (a reader cutting an
        answer at the bytes it wants) is no error worth a traceback on stderr."""

        def handle_error(self, request, client_address):
            if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                return
            super().handle_error(request, client_address)

    return Quiet


def QuietHTTPServer(*args, **kwargs):  # noqa: N802 - a class, built lazily
    return _quiet_server_class()(*args, **kwargs)


@contextmanager
def http_server(directory, *, ranges: bool = True):
    """A real HTTP server on 127.0.0.1 serving ``directory``; yields its ``host:port``
    (a test puts ``user:password@`` before it) and stops it on exit."""
    server = QuietHTTPServer(("127.0.0.1", 0), _range_handler(str(directory), ranges))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------------- Ray
LOOPBACK = "127.0.0.1"
_RAY_PROCESSES = ("raylet", "gcs_server", "plasma_store", "ray::", "default_worker", "dashboard")


def _ray_children() -> list:
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            text = " ".join([p.name(), *p.cmdline()])
        except psutil.Error:
            continue
        if any(name in text for name in _RAY_PROCESSES):
            found.append(p)
    return found


@pytest.fixture(scope="module")
def cluster(request):
    """Ray nodes of one CPU each on this machine (ray.cluster_utils.Cluster), started
    once per module that uses it and shut down after it, with no Ray process left
    behind: two (test_ray.py), or the module's ``RAY_NODES`` (test_matrix.py: one, which
    starts in half the time)."""
    import ray
    from ray.cluster_utils import Cluster

    before = {p.pid for p in _ray_children()}
    # Loopback only: every Ray process and connection stays on 127.0.0.1.
    node = {"num_cpus": 1, "object_store_memory": 128 * 1024 * 1024, "node_ip_address": LOOPBACK}
    nodes = Cluster(initialize_head=True, head_node_args=node)
    for _ in range(getattr(request.module, "RAY_NODES", 2) - 1):
        nodes.add_node(**node)
    try:
        ray.init(address=nodes.address, log_to_driver=False, _node_ip_address=LOOPBACK)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()
        deadline = time.monotonic() + 30
        while (left := [p for p in _ray_children() if p.pid not in before]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert not left, f"Ray processes left running: {[p.name() for p in left]}"


def become_another_store(path, store_id: str) -> None:
    """Give the store at ``path`` (a ``cp -r`` copy) another store id, as if it had been
    recorded on its own: ``meta.store_id`` and the store tag in the header of each of its
    own format-3 segments (docs/FORMAT.md), which readers check against the id."""
    import sqlite3
    from contextlib import closing

    from framestore._format import pack_file_header, read_file_header, store_tag
    from framestore.disk.segments import list_segment_ids, segment_path

    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'store_id'", [store_id])
        merged = {r[0] for r in conn.execute("SELECT id FROM segments WHERE header_id IS NOT NULL")}
    for sid in list_segment_ids(path):
        seg = segment_path(path, sid)
        with open(seg, "r+b") as fp:
            header = read_file_header(fp, sid)
            if header.version >= 3 and header.store_tag and sid not in merged:
                fp.seek(0)
                fp.write(pack_file_header(header.segment_id, header.version, store_tag(store_id)))
