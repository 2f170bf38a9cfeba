"""Every verb on every kind of store (issue 18, item 1): a store-kind x verb matrix.

Kinds (tests/_matrix_stores.py, each built once for the module): fresh, vector-recorded
(``--envs 4``), merged from three sources (two of them diverged ``cp -r`` copies of one
store), after rm + gc, killed (SIGKILL) and recovered, killed and not recovered, live (a
process records into it while the verbs run), format 1 and 2 (the 0.1.0 and 0.2.0
fixtures), published to a directory and published to S3 (the conftest moto server).

Each cell runs one verb the way a user does (the CLI in-process, ``read_store`` on the
Ray cluster of conftest) and asserts: exit 0, or the documented refusal in one line
(``REFUSALS``); never a traceback; exported frames bit-exact against ``iter_frames``
(every format here is lossless: npz, GIF of Atari frames, ``mp4 --lossless``, PNG,
Parquet's PNG cells); episode and step counts of ``ls --json``, ``info --json``,
``read_store`` and the Parquet export agree with the store's catalogue; a merge's result
holds every source episode.

On the live kind an episode grows while a verb runs: a count must lie between what the
catalogue said just before the verb and just after it, and an exported episode must be a
prefix of the frames read after the export.

``KNOWN_DEFECTS`` lists the cells that fail because of a defect of issue 18 being fixed
elsewhere; they run as strict xfails, so the cell turns red when its fix is merged and
the entry must go.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _matrix_stores import KINDS, Kind, build_kinds, episode_signatures
from conftest import assert_one_line_error, run_cli
from PIL import Image

#: Nodes of the conftest Ray cluster: one is enough to run read_store (test_ray.py
#: covers two), and starts in half the time.
RAY_NODES = 1

VERBS = (
    "ls",
    "ls_json",
    "info",
    "info_json",
    "verify",
    "verify_quick",
    "verify_replay",
    "export_npz",
    "export_gif",
    "export_mp4_lossless",
    "export_png",
    "export_parquet",
    "export_run",
    "export_lerobot",
    "export_rrd",
    "export_minari",
    "gui_replay_screenshot",
    "read_store",
    "torch_dataset",
    "merge_source",
    "publish",
    "gc_dry_run",
)


@dataclass(frozen=True)
class Refusal:
    """The documented outcome of a verb that does not apply to a kind: ``code``, and
    ``words`` in its one line on stderr (``one_line``) or in its report on stdout."""

    code: int
    words: str
    why: str
    one_line: bool = True


#: Cells whose correct outcome is a refusal (README, docs/RL.md "Merging stores",
#: docs/RELIABILITY.md "Process crash", `framestore publish --help`).
REFUSALS: dict[str, Refusal] = {
    "killed-verify": Refusal(
        1, "run `framestore recover`", "a killed store has problems until recover", False
    ),
    "killed-verify_quick": Refusal(
        1, "run `framestore recover`", "a killed store has problems until recover", False
    ),
    "killed-merge_source": Refusal(
        2, "run `framestore recover` on it first", "merge refuses a SRC left recording"
    ),
    "live-merge_source": Refusal(4, "locked by another writer", "merge refuses a locked SRC"),
    "published_dir-merge_source": Refusal(
        2, "published store is read-only", "merge writes into DEST from local stores"
    ),
    "published_s3-merge_source": Refusal(
        2, "merge combines stores on this machine, not URLs", "merge reads local stores"
    ),
    "published_dir-publish": Refusal(2, "is a published store already", "publish once"),
    "published_s3-publish": Refusal(2, "is a published store already", "publish once"),
}

#: Cells that do not apply, with the reason.
NOT_APPLICABLE: dict[str, str] = {}

#: Cells that fail only because of a defect being fixed elsewhere: cell id -> the defect.
#: They run as strict xfails: when the fix is merged the cell turns red; remove it here.
KNOWN_DEFECTS: dict[str, str] = {}


#: Markers of the suite a verb's cells carry (``-m "not ray"`` leaves Ray unstarted).
VERB_MARKS = {"read_store": pytest.mark.ray, "gui_replay_screenshot": pytest.mark.qt}


def _marks(cell: str) -> list:
    verb = cell.split("-", 1)[1]
    marks = [VERB_MARKS[verb]] if verb in VERB_MARKS else []
    if cell in NOT_APPLICABLE:
        marks.append(pytest.mark.skip(reason=NOT_APPLICABLE[cell]))
    if cell in KNOWN_DEFECTS:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS[cell]))
    return marks


CELLS = [pytest.param(k, v, id=f"{k}-{v}", marks=_marks(f"{k}-{v}")) for k in KINDS for v in VERBS]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def kinds(tmp_path_factory, s3, request):
    """Every kind, built once; the Ray cluster (conftest) starts while the recording
    children of the live and killed kinds import, before any cell runs (and only if a
    read_store cell was selected)."""
    ray_cells = any(i.nodeid.endswith("-read_store]") for i in request.session.items)
    built = build_kinds(
        tmp_path_factory.mktemp("kinds"),
        s3,
        meanwhile=lambda: request.getfixturevalue("cluster") if ray_cells else None,
    )
    try:
        yield built.kinds
    finally:
        built.close()


class Counts:
    """Steps per episode id as the catalogue says just before a verb (``before``) and
    after it (``after``, read when a check first asks, which is after the verb ran)."""

    def __init__(self, kind: Kind):
        self.kind = kind
        self.before = catalogue(kind)
        self._after: dict[int, int] | None = None

    @property
    def after(self) -> dict[int, int]:
        if self._after is None:
            self._after = catalogue(self.kind)
        return self._after

    def check(self, got: dict[int, int], what: str) -> None:
        """``got`` (steps per episode of a verb's output) lies between before and
        after: equal to both on every kind but the live one."""
        assert set(self.before) <= set(got) <= set(self.after), (what, got, self.after)
        for eid, n in got.items():
            assert self.before.get(eid, 0) <= n <= self.after[eid], (what, eid, n, self.after)

    def check_total(self, episodes: int, steps: int, what: str) -> None:
        assert len(self.before) <= episodes <= len(self.after), (what, episodes)
        assert sum(self.before.values()) <= steps <= sum(self.after.values()), (what, steps)


def catalogue(kind: Kind) -> dict[int, int]:
    with kind.open() as st:
        return {ep.id: ep.steps for ep in st.episodes()}


def stored_frames(kind: Kind, episode_id: int) -> list[np.ndarray]:
    with kind.open() as st:
        return list(st.iter_frames(episode_id))


def same_frames(got: list[np.ndarray], kind: Kind, episode_id: int, what: str) -> None:
    """``got`` is the episode's frames, bit for bit (on a live store: a prefix of them,
    read after ``got`` was made)."""
    want = stored_frames(kind, episode_id)
    if kind.live:
        want = want[: len(got)]
    assert len(got) == len(want), (what, episode_id, len(got), len(want))
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape and np.array_equal(a, b), (what, episode_id, i)


def cli_ok(*args) -> str:
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


# --------------------------------------------------------------------------- verbs
def v_ls(kind: Kind, tmp: Path, counts: Counts) -> None:
    rows = [line.split() for line in cli_ok("ls", kind.location).splitlines()]
    listed = {int(r[0]) for r in rows if r and r[0].isdigit()}
    assert set(counts.before) <= listed <= set(counts.after), listed


def v_ls_json(kind: Kind, tmp: Path, counts: Counts) -> None:
    data = json.loads(cli_ok("ls", kind.location, "--json"))
    counts.check({e["id"]: e["steps"] for e in data["episodes"]}, "ls --json")
    assert {e["run_id"] for e in data["episodes"]} <= {r["id"] for r in data["runs"]}


def v_info(kind: Kind, tmp: Path, counts: Counts) -> None:
    out = cli_ok("info", kind.location)
    assert f"episodes     {len(counts.after)} live" in out, out


def v_info_json(kind: Kind, tmp: Path, counts: Counts) -> None:
    data = json.loads(cli_ok("info", kind.location, "--json"))
    counts.check_total(data["episodes"]["live"], data["steps"], "info --json")


def v_verify(kind: Kind, tmp: Path, counts: Counts) -> None:
    assert cli_ok("verify", kind.location).splitlines()[-1].startswith("ok: ")


def v_verify_quick(kind: Kind, tmp: Path, counts: Counts) -> None:
    assert cli_ok("verify", kind.location, "--quick").splitlines()[-1].startswith("ok: ")


def v_verify_replay(kind: Kind, tmp: Path, counts: Counts) -> None:
    out = cli_ok("verify", kind.location, "--replay")
    assert f"ok: {len(counts.before)} match, 0 differ" in out or (
        kind.live and ", 0 differ, 0 not replayable" in out
    ), out


def _export_each(kind: Kind, tmp: Path, counts: Counts, ext: str, *extra) -> dict[int, Path]:
    outs = {}
    for eid in counts.before:
        out = tmp / (f"ep{eid}" if ext == "png" else f"ep{eid}.{ext}")
        # a directory of PNGs is asked for by a trailing slash
        cli_ok(
            "export",
            kind.location,
            "--episode",
            eid,
            "-o",
            f"{out}{'/' if ext == 'png' else ''}",
            *extra,
        )
        outs[eid] = out
    return outs


def v_export_npz(kind: Kind, tmp: Path, counts: Counts) -> None:
    for eid, out in _export_each(kind, tmp, counts, "npz").items():
        with np.load(out, allow_pickle=False) as z:
            same_frames(list(z["frames"]), kind, eid, "npz")


def _animation_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as im:
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
        return frames


def v_export_gif(kind: Kind, tmp: Path, counts: Counts) -> None:
    # an Atari frame has far fewer than 256 colours: GIF gives the stored pixels back
    for eid, out in _export_each(kind, tmp, counts, "gif", "--lossless").items():
        same_frames(_animation_frames(out), kind, eid, "gif")


def v_export_mp4_lossless(kind: Kind, tmp: Path, counts: Counts) -> None:
    import av

    for eid, out in _export_each(kind, tmp, counts, "mp4", "--lossless").items():
        with av.open(str(out)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
        same_frames(frames, kind, eid, "mp4 --lossless")


def v_export_png(kind: Kind, tmp: Path, counts: Counts) -> None:
    for eid, out in _export_each(kind, tmp, counts, "png").items():
        names = sorted(os.listdir(out))
        with kind.open() as st:  # one file per step with a frame (steps may have none)
            steps = [s.step for s in st.read_steps(eid) if s.frame is not None]
        assert names == [f"step_{i:06d}.png" for i in steps[: len(names)]]
        same_frames([np.asarray(Image.open(out / n)) for n in names], kind, eid, "png")


def v_export_parquet(kind: Kind, tmp: Path, counts: Counts) -> None:
    import pyarrow.parquet as pq

    out = tmp / "pq"
    cli_ok("export", kind.location, "--format", "parquet", "-o", out)
    table = pq.read_table(out, columns=["episode_id", "step", "image"]).to_pydict()
    by_episode: dict[int, dict[int, np.ndarray | None]] = {}
    for eid, step, image in zip(table["episode_id"], table["step"], table["image"], strict=True):
        # a step without a frame (dropped, or not recorded) is a row whose image is null
        frame = None if image is None else np.asarray(Image.open(io.BytesIO(image["bytes"])))
        by_episode.setdefault(eid, {})[step] = frame
    counts.check({e: len(steps) for e, steps in by_episode.items()}, "parquet")
    for eid, steps in by_episode.items():
        assert sorted(steps) == list(range(len(steps)))
        frames = [steps[i] for i in range(len(steps)) if steps[i] is not None]
        same_frames(frames, kind, eid, "parquet")


def v_export_run(kind: Kind, tmp: Path, counts: Counts) -> None:
    with kind.open() as st:
        runs = {ep.run_id for ep in st.episodes()}
    seen = set()
    for run in sorted(runs):
        out = tmp / f"run{run}"
        reports = json.loads(
            cli_ok(
                "export", kind.location, "--run", run, "-o", f"{out}/", "--format", "npz", "--json"
            )
        )
        for r in reports:
            eid = r["episode_id"]
            with np.load(out / f"episode_{eid:06d}.npz", allow_pickle=False) as z:
                same_frames(list(z["frames"]), kind, eid, "export --run")
            seen.add(eid)
    assert seen == set(counts.before), (seen, counts.before)


def _frames_by_step(
    by_episode: dict[int, dict[int, np.ndarray]], kind, counts, what, *, rows, leave_out=()
):
    """Each exported episode holds, bit for bit, the frames of the steps that have one
    (the format-2 fixture's episode 3 has steps without a frame: no row, no image), of
    its first n steps (``rows`` = "steps") or its first n - 1 (``rows`` = "transitions":
    a LeRobot row pairs a frame with the next step's action, so the last frame has none),
    where n lies between the catalogue's step count before and after the export. Every
    episode but ``leave_out`` (refused, in one line) is there unless that leaves it
    nothing."""
    less = 1 if rows == "transitions" else 0
    with kind.open() as st:
        for eid in (set(counts.before) | set(by_episode)) - set(leave_out):
            framed = dict(st.iter_steps_frames(eid))  # read after the export
            got = by_episode.get(eid, {})
            lo, hi = counts.before.get(eid, 0), counts.after[eid]
            steps = sorted(framed)
            fits = [
                n for n in range(lo, hi + 1) if sorted(got) == [s for s in steps if s < n - less]
            ]
            assert fits, (what, eid, sorted(got)[-3:], len(got), len(framed), lo, hi)
            for step, frame in got.items():
                assert np.array_equal(frame, framed[step]), (what, eid, step)


def v_export_lerobot(kind: Kind, tmp: Path, counts: Counts) -> None:
    """A LeRobot v3 directory (LeRobot's own loader reads it in test_export_lerobot.py):
    every image row is the frame of its step."""
    import pyarrow.parquet as pq

    out = tmp / "lerobot"
    cli_ok("export", kind.location, "--format", "lerobot", "-o", out)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0", info
    by_episode: dict[int, dict[int, np.ndarray]] = {}
    for path in sorted((out / "data").rglob("*.parquet")):
        table = pq.read_table(path, columns=["episode_id", "step", "observation.images.render"])
        cols = table.to_pydict()
        for eid, step, image in zip(
            cols["episode_id"], cols["step"], cols["observation.images.render"], strict=True
        ):
            frame = np.asarray(Image.open(io.BytesIO(image["bytes"])))
            by_episode.setdefault(eid, {})[step] = frame
    assert info["total_frames"] == sum(len(s) for s in by_episode.values()), info
    _frames_by_step(by_episode, kind, counts, "lerobot", rows="transitions")


def v_export_rrd(kind: Kind, tmp: Path, counts: Counts) -> None:
    """One rerun recording, read back with rerun's own reader: every frame as stored."""
    rr_chunk = pytest.importorskip("rerun.chunk")
    out = tmp / "x.rrd"
    cli_ok("export", kind.location, "--format", "rrd", "-o", out)
    reader = rr_chunk.RrdReader(out)
    by_episode: dict[int, dict[int, np.ndarray]] = {}
    for chunk in reader.stream(store=reader.recordings()[0]):
        path = chunk.entity_path
        if not (path.startswith("/episode_") and path.endswith("/render")):
            continue
        eid = int(path[len("/episode_") : -len("/render")])
        cols = chunk.to_record_batch().to_pydict()
        for step, blob in zip(cols["step"], cols["EncodedImage:blob"], strict=True):
            frame = np.asarray(Image.open(io.BytesIO(bytes(blob[0]))))
            by_episode.setdefault(eid, {})[step] = frame
    _frames_by_step(by_episode, kind, counts, "rrd", rows="steps")


def v_export_minari(kind: Kind, tmp: Path, counts: Counts, request) -> None:
    """A Minari dataset per run (a dataset has one environment, and the killed and live
    kinds hold two runs with different time limits: one run each, as the refusal of a
    mixed export says), opened by ``minari.load_dataset``: every observation is the
    stored frame of its step, in episode order."""
    minari = pytest.importorskip("minari")
    with kind.open() as st:  # a Minari episode needs a frame at every step: refused
        frameless = {
            eid for eid in counts.before if any(s.frame is None for s in st.read_steps(eid))
        }
    datasets = tmp / "datasets"
    datasets.mkdir()
    request.getfixturevalue("monkeypatch").setenv("MINARI_DATASETS_PATH", str(datasets))
    with kind.open() as st:
        runs = sorted({ep.run_id for ep in st.episodes() if ep.id in counts.before})
    by_episode: dict[int, dict[int, np.ndarray]] = {}
    for run in runs:
        name = f"run{run}-v0"
        args = ("export", kind.location, "--format", "minari", "--run", run, "-o", datasets / name)
        with kind.open() as st:
            in_run = {ep.id for ep in st.episodes(run_id=run)}
        if in_run & frameless:
            line = assert_one_line_error(run_cli(*args))
            assert "without a stored frame" in line, line
            continue
        report = json.loads(cli_ok(*args, "--json"))
        episodes = minari.load_dataset(name).iterate_episodes()
        for eid, ep in zip(report["episodes"], episodes, strict=True):
            by_episode[eid] = dict(enumerate(ep.observations))
    leave_out = {e for e in counts.before if e in frameless}
    _frames_by_step(by_episode, kind, counts, "minari", rows="steps", leave_out=leave_out)


def v_gui_replay_screenshot(kind: Kind, tmp: Path, counts: Counts, request) -> None:
    pytest.importorskip("pytestqt")
    request.getfixturevalue("qapp")
    eid = min(counts.before)
    out = tmp / "replay.png"
    cli_ok("gui", kind.location, "--replay", eid, "--frame", 5, "--screenshot", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def v_read_store(kind: Kind, tmp: Path, counts: Counts, request) -> None:
    read = request.getfixturevalue("read_every_kind")
    if kind.location in read.rows:
        rows, counts = read.rows[kind.location], read.counts[kind.name]
    else:  # the read of every kind failed: read this one alone, to say which fails
        from framestore.ray import read_store

        rows = read_store(kind.location).take_all()
    by_episode: dict[int, dict[int, np.ndarray]] = {}
    for row in rows:
        steps = by_episode.setdefault(row["episode_id"], {})
        assert row["step"] not in steps, "a step came back twice"
        steps[row["step"]] = row["frame"]
    check_framed_steps(by_episode, kind, counts, "read_store")


def v_torch_dataset(kind: Kind, tmp: Path, counts: Counts) -> None:
    """framestore.torch: an iterable pass through a DataLoader of 2 workers, each opening
    the store itself by location (a directory or a URL), every frame bit for bit. A
    store recorded with observations (``observations``, ``vector`` and its published
    copy) gives the ``observation`` stream too: Assault's is its rendered frame."""
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from framestore.torch import IterableStepDataset

    with kind.open() as st:
        eps = st.episodes()
        observed = bool(eps) and all("observation" in e.streams for e in eps)
    assert observed == (kind.name in ("observations", "vector", "published_dir"))
    streams = ("render", "observation") if observed else ("render",)
    by_episode: dict[int, dict[int, np.ndarray]] = {}
    with IterableStepDataset(kind.location, batch_size=16, streams=streams) as ds:
        for batch in DataLoader(ds, batch_size=None, num_workers=2):
            if observed:
                obs, render = batch["observation"], batch["render"]
                assert obs.shape == render.shape and bool((obs == render).all())
            for eid, step, frame in zip(
                batch["episode"].tolist(), batch["step"].tolist(), batch["render"].numpy(),
                strict=True,
            ):  # fmt: skip
                steps = by_episode.setdefault(eid, {})
                assert step not in steps, "a step came back twice"
                steps[step] = frame
    check_framed_steps(by_episode, kind, counts, "torch_dataset")


def check_framed_steps(by_episode: dict[int, dict[int, np.ndarray]], kind, counts, what) -> None:
    """A reader that yields the steps that have a frame (read_store, the torch datasets):
    with the frameless steps (the format-2 fixture has some) the counts agree, and every
    frame is the stored one, in step order."""
    with kind.open() as st:
        frameless = {e: sum(s.frame is None for s in st.read_steps(e)) for e in by_episode}
    counts.check({e: len(s) + frameless[e] for e, s in by_episode.items()}, what)
    for eid, steps in by_episode.items():
        same_frames([steps[s] for s in sorted(steps)], kind, eid, what)


@dataclass
class EveryKindRead:
    """``read_store`` over every kind at once (one Ray Data job instead of ten): rows by
    location (empty when the read failed) and each kind's counts around the read."""

    rows: dict[str, list[dict]]
    counts: dict[str, Counts]


@pytest.fixture(scope="module")
def read_every_kind(kinds) -> EveryKindRead:
    from framestore.ray import read_store

    counts = {name: Counts(kind) for name, kind in kinds.items()}
    rows: dict[str, list[dict]] = {}
    try:
        for row in read_store([k.location for k in kinds.values()]).take_all():
            rows.setdefault(row["store"], []).append(row)
    except Exception:  # each cell reads its kind alone and reports its own failure
        rows = {}
    for c in counts.values():
        assert c.after is not None  # read now: after the read, before any other verb
    return EveryKindRead(rows, counts)


def v_merge_source(kind: Kind, tmp: Path, counts: Counts) -> None:
    dest = tmp / "dest.store"
    cli_ok("merge", dest, kind.location)
    assert episode_signatures(kind.location) <= episode_signatures(str(dest))


def v_publish(kind: Kind, tmp: Path, counts: Counts) -> None:
    pub = tmp / "pub"
    cli_ok("publish", kind.location, pub)
    assert cli_ok("verify", pub).splitlines()[-1].startswith("ok: ")
    published, source = episode_signatures(str(pub)), episode_signatures(kind.location)
    # a store being recorded (or killed) publishes its finished episodes
    assert published == source if not (kind.live or kind.killed) else published <= source


def _files(path: Path | None) -> dict[str, int]:
    if path is None:
        return {}
    return {
        str(p.relative_to(path)): p.stat().st_size
        for p in path.rglob("*")
        if p.is_file() and not p.name.endswith(("-shm", "-wal"))
    }


def v_gc_dry_run(kind: Kind, tmp: Path, counts: Counts) -> None:
    before = _files(kind.path)
    assert "gc (dry run)" in cli_ok("gc", kind.location, "--dry-run")
    if not kind.live:
        assert _files(kind.path) == before  # a dry run changes nothing


VERB_CHECKS: dict[str, Callable] = {name: globals()[f"v_{name}"] for name in VERBS}
NEEDS_REQUEST = {"gui_replay_screenshot", "read_store", "export_minari"}


# --------------------------------------------------------------------------- the matrix
@pytest.mark.parametrize("kind_name, verb", CELLS)
def test_cell(kinds, kind_name, verb, tmp_path, request):
    kind = kinds[kind_name]
    cell = f"{kind_name}-{verb}"
    refusal = REFUSALS.get(cell)
    if refusal is None:
        args = (request,) if verb in NEEDS_REQUEST else ()
        VERB_CHECKS[verb](kind, tmp_path, Counts(kind), *args)
        return
    command = {
        "verify": ("verify", kind.location),
        "verify_quick": ("verify", kind.location, "--quick"),
        "merge_source": ("merge", tmp_path / "dest.store", kind.location),
        "publish": ("publish", kind.location, tmp_path / "pub"),
    }[verb]
    result = run_cli(*command)
    if refusal.one_line:
        line = assert_one_line_error(result, refusal.code)
        assert refusal.words in line, (refusal.why, line)
    else:
        assert "Traceback" not in result.output
        assert result.exit_code == refusal.code and refusal.words in result.output, (
            refusal.why,
            result.output,
        )


@pytest.mark.parametrize(
    "cell", [pytest.param("merged-build", marks=_marks("merged-build"), id="merged-build")]
)
def test_the_merged_kind_holds_every_source_episode(kinds, cell):
    merged = kinds["merged"]
    assert merged.sources and merged.sources <= episode_signatures(merged.location)
