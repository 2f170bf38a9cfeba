"""Every kind of store the store-kind x verb matrix (tests/cli/test_matrix.py) runs its verbs
on, each built once, small: a few Assault episodes of 21 steps (``--max-steps 20``).

A kind is a :class:`Kind`: where the store is (a path, or a URL for the S3 copy), whether
it is read-only (published) or being written (live), and what a merge of it must hold.
``build_kinds`` builds them all into one directory; the live kind keeps a recording
process (:class:`Recording`) writing into its store until :meth:`Kinds.close`.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conftest import run_cli, wait_for

from framestore import FrameStore

ENV_ID = "ALE/Assault-v5"
MAX_STEPS = 20  # an episode of 21 steps (step 0 is the reset)
FIXTURE_V1 = Path(__file__).parent / "fixtures" / "store-v0.1.0"
FIXTURE_V2 = Path(__file__).parent / "fixtures" / "store-v0.2.0"

#: The store kinds, in the order the matrix lists them.
KINDS = (
    "fresh",
    "observations",
    "vector",
    "merged",
    "rm_gc",
    "killed_recovered",
    "killed",
    "live",
    "format_v1",
    "format_v2",
    "published_dir",
    "published_s3",
)


@dataclass
class Kind:
    """One store of the matrix.

    Attributes:
        name: one of ``KINDS``.
        location: what a user passes to the CLI (a directory, or an ``s3://`` URL).
        published: a read-only published copy (a directory or a URL).
        live: a recording process writes into it while the verbs run.
        killed: its recorder was killed (SIGKILL) and nothing repaired it since.
        sources: for ``merged``, the signature of every episode of every source.
    """

    name: str
    location: str
    published: bool = False
    live: bool = False
    killed: bool = False
    sources: set[tuple] = field(default_factory=set)

    @property
    def path(self) -> Path | None:
        """The local directory (None for a URL)."""
        return None if "://" in self.location else Path(self.location)

    def open(self) -> FrameStore:
        """The store, read-only (a live or killed store is never written by a verb's
        check)."""
        return FrameStore.open(self.location, readonly=True)


def episode_signatures(location: str) -> set[tuple]:
    """``(env_id, seed, steps, streams, sha256 of every frame of every stream)`` of each
    finished episode: what identifies an episode across stores whatever its id."""
    out = set()
    with FrameStore.open(location, readonly=True) as st:
        for ep in st.episodes():
            if ep.status == "recording":
                continue
            digest = hashlib.sha256()
            for stream in ep.streams:  # render, then any other stream (observations)
                for frame in st.iter_frames(ep.id, stream=stream):
                    digest.update(frame.tobytes())
            out.add((ep.env_id, ep.seed, ep.steps, ep.streams, digest.hexdigest()))
    return out


def record(path: Path, *args) -> None:
    """``framestore record PATH --env ALE/Assault-v5 --max-steps 20 ARGS...``."""
    result = run_cli("record", path, "--env", ENV_ID, "--max-steps", MAX_STEPS, *args)
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- live
# Run 1: two finished episodes; run 2: one episode stepped slowly (20 Hz) until the
# parent creates the stop file, or until the environment ends it (then it waits, the
# episode still open). Each milestone is a line in the progress file.
_RECORDING_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from framestore import FrameStore, RecordFrames
    from framestore.envs import make_env

    store_path, progress, stop = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    def say(line):
        with progress.open("a") as f:
            f.write(line + "\\n")

    with FrameStore.open(store_path) as store:
        env = RecordFrames(make_env("{env}", max_episode_steps={max_steps}), store)
        for seed in (101, 102):
            env.reset(seed=seed)
            env.action_space.seed(seed)
            done = False
            while not done:
                _, _, term, trunc, _ = env.step(env.action_space.sample())
                done = term or trunc
        env.close()
        env = RecordFrames(make_env("{env}", max_episode_steps=100_000), store)
        env.reset(seed=103)
        env.action_space.seed(103)
        step = 0
        while not stop.exists():
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            step += 1
            if step == 8:
                say("ready")
            if term or trunc:
                while not stop.exists():
                    time.sleep(0.05)
            # 20 steps a second, then one a second: the episode stays open and growing
            # while the matrix runs, but small enough to export in every format
            time.sleep(0.05 if step < 60 else 1.0)
        env.close()
    say("closed")
    """
).format(env=ENV_ID, max_steps=MAX_STEPS)


class Recording:
    """A process recording into ``path`` (two finished episodes, then one open),
    started by the constructor; ``ready`` once the open episode has steps."""

    def __init__(self, path: Path, work: Path):
        self.progress = work / f"{path.name}.progress"
        self.stop_file = work / f"{path.name}.stop"
        # stderr to a file: a pipe nobody reads for minutes could fill and stop the child
        self.log = work / f"{path.name}.stderr"
        with self.log.open("w") as err:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _RECORDING_CHILD,
                    str(path),
                    str(self.progress),
                    str(self.stop_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def _said(self, word: str) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        return self.progress.exists() and word in self.progress.read_text().split()

    def wait_ready(self) -> None:
        wait_for(lambda: self._said("ready"), timeout=180, interval=0.05)

    def kill(self) -> None:
        """SIGKILL: the open episode stays ``recording``, nothing is flushed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """Ask it to close its recorder, wait for its exit; its exit code."""
        if self.proc.poll() is None:
            self.stop_file.touch()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# --------------------------------------------------------------------------- kinds
def _merged(root: Path) -> Kind:
    """Three sources, two of them diverged ``cp -r`` copies of one store."""
    base, other = root / "base.store", root / "other.store"
    record(base, "--seed", 21)
    w1, w2 = root / "w1.store", root / "w2.store"
    shutil.copytree(base, w1)
    shutil.copytree(base, w2)
    record(w1, "--seed", 31)
    record(w2, "--seed", 41, "--episodes", 2)
    record(other, "--seed", 51)
    sources = [other, w1, w2]
    signatures = set().union(*(episode_signatures(str(s)) for s in sources))
    dest = root / "merged.store"
    run_cli("merge", dest, *sources)  # test_matrix checks the outcome (cell merged-build)
    return Kind("merged", str(dest), sources=signatures)


def _rm_gc(root: Path) -> Kind:
    path = root / "rmgc.store"
    record(path, "--seed", 61, "--episodes", 3)
    for args in (("rm", path, "--episode", 2), ("gc", path, "--threshold", 1)):
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
    return Kind("rm_gc", str(path))


@dataclass
class Kinds:
    """Every kind of store, built; ``close`` stops the live recording."""

    kinds: dict[str, Kind]
    live: Recording

    def close(self) -> None:
        code = self.live.stop()
        assert code == 0, f"the live recording exited {code}: {self.live.log.read_text()}"


def build_kinds(root: Path, s3, meanwhile: Callable[[], object] = lambda: None) -> Kinds:
    """Build every kind under ``root``; the S3 copy goes to a new bucket of ``s3`` (the
    conftest moto server). ``meanwhile`` runs while the recording children start."""
    kinds: dict[str, Kind] = {}
    live_path, killed_path = root / "live.store", root / "killed.store"
    # the two recording children start first: they import while the rest is built
    live, killed = Recording(live_path, root), Recording(killed_path, root)
    try:
        meanwhile()
        fresh = root / "fresh.store"
        record(fresh, "--seed", 1, "--episodes", 2)
        kinds["fresh"] = Kind("fresh", str(fresh))
        # observations recorded too: Assault's observation is its rendered frame, stored
        # once for both streams (issue 20)
        observed = root / "observations.store"
        record(observed, "--seed", 71, "--observations")
        kinds["observations"] = Kind("observations", str(observed))
        vector = root / "vector.store"
        # with observations (issue 20): each sub-environment's, stored once with its frame
        record(vector, "--seed", 11, "--episodes", 4, "--envs", 4, "--observations")
        kinds["vector"] = Kind("vector", str(vector))
        kinds["merged"] = _merged(root)
        kinds["rm_gc"] = _rm_gc(root)
        killed.wait_ready()
        killed.kill()
        recovered = root / "recovered.store"
        shutil.copytree(killed_path, recovered)
        result = run_cli("recover", recovered)
        assert result.exit_code == 0, result.output
        kinds["killed_recovered"] = Kind("killed_recovered", str(recovered))
        kinds["killed"] = Kind("killed", str(killed_path), killed=True)
        v1 = root / "v1.store"
        shutil.copytree(FIXTURE_V1, v1)
        kinds["format_v1"] = Kind("format_v1", str(v1))
        v2 = root / "v2.store"
        shutil.copytree(FIXTURE_V2, v2)
        kinds["format_v2"] = Kind("format_v2", str(v2))
        pub = root / "vector.pub"
        result = run_cli("publish", vector, pub)
        assert result.exit_code == 0, result.output
        kinds["published_dir"] = Kind("published_dir", str(pub), published=True)
        url = f"s3://{s3.bucket()}/fresh"
        result = run_cli("publish", fresh, url)
        assert result.exit_code == 0, result.output
        kinds["published_s3"] = Kind("published_s3", url, published=True)
        live.wait_ready()
        kinds["live"] = Kind("live", str(live_path), live=True)
    except BaseException:
        if killed.proc.poll() is None:
            killed.kill()
        live.stop()
        raise
    return Kinds({k: kinds[k] for k in KINDS}, live)
