"""``framestore merge DEST SRC...``: combine stores (one per rollout worker, or from
several machines) into one.

Every source is checked before anything changes (not DEST itself, not given twice, not
locked by a recorder, nothing left ``recording``, a schema this framestore knows, clean
under ``verify --quick``); a bad one is refused with one line. Then, holding DEST's
writer lock and each source's in turn, every source is merged crash-safely as
``framestore.state.merging`` describes: its sealed segments are copied (hard-linked with
``move``) under new segment ids and never rewritten, its runs, episodes and steps are
re-keyed and committed in ONE transaction that also journals the source as merged. A
re-run after a crash undoes the unfinished source and merges it again.

What is "already merged" is decided episode by episode, never by the store id alone:
copies of one store (``cp -r``) share its id, and a copy that recorded more (or a store
that recorded more since it was merged) holds episodes DEST does not. An episode of a
source is in DEST when a finished merge of the same store id mapped it to an episode of
DEST that has the same index, seed, start and end times (and, unless deleted in DEST
since, the same step count and return). Only the other episodes are merged, with the
runs they belong to that DEST does not hold yet, and only the segments their frames are
in. So ``merge ALL W1 W2`` of two diverged copies of one store holds the episodes they
share once and the episodes each recorded on its own, in one command or in two; a
source with nothing new is reported ``already merged``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framestore import FrameStore, InvalidInput, StoreLocked
from framestore.catalog import MERGED_TAGS, MergeRecord
from framestore.disk.segments import checked_segment_dir, segment_path
from framestore.errors import NotAStore
from framestore.state.bookkeeping import sync_segments, writer_lock
from framestore.state.merging import (
    PHASES,
    header_id,
    header_tag,
    new_segment_ids,
    place_segments,
    remove_store_files,
    undo_incomplete_merges,
    write_merge_note,
)

from .verify import verify

__all__ = ["PHASES", "MergeReport", "SourceResult", "merge"]

Progress = Callable[[int, int], None]  # (bytes done, bytes total) of the current source
Hook = Callable[[str], None]
_PAGE = 10_000  # step rows copied at a time


@dataclass
class SourceResult:
    """What happened to one source. ``status``: ``merged``, ``already merged`` or
    ``removal finished`` (a ``--move`` that stopped after its commit)."""

    path: str
    status: str
    runs: int = 0
    episodes: int = 0
    steps: int = 0
    segments: int = 0
    segments_linked: int = 0
    bytes: int = 0
    episode_ids: dict[int, int] = field(default_factory=dict)  # source id -> id in DEST


@dataclass
class MergeReport:
    dest: str
    move: bool
    sources: list[SourceResult] = field(default_factory=list)
    interrupted_undone: list[int] = field(default_factory=list)  # segment ids removed
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Plan:
    path: Path
    kind: str  # merge | already | finish removal
    fingerprint: str = ""
    source_id: str = ""  # the journal's name for the source (store id, or its fingerprint)


# --------------------------------------------------------------------------- checks
def fingerprint(store: FrameStore) -> str:
    """A digest of a store's runs and live episodes: it changes when episodes are
    recorded, deleted or recovered, not when segments are compacted."""
    rows = store.catalog.merges.fingerprint_rows()
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _refuse_urls(locations: list[str | os.PathLike]) -> None:
    """A URL is refused by name (with any ``user:password@`` left out), before ``Path()``
    would fold ``s3://bucket`` into ``s3:/bucket`` and report it missing."""
    for location in map(os.fspath, locations):
        if "://" in location:
            parts = urllib.parse.urlsplit(location)
            shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
            raise InvalidInput(
                f"{shown}: merge combines stores on this machine, not URLs "
                "(a published store is read-only)"
            )


def _check_paths(dest: Path, sources: list[Path]) -> None:
    if not sources:
        raise InvalidInput("give at least one source store")
    for i, src in enumerate(sources):
        if _same(src, dest):
            raise InvalidInput(f"{src} is DEST itself; a store cannot be merged into itself")
        if any(_same(src, other) for other in sources[:i]):
            raise InvalidInput(f"{src} is given twice")


def _dest_journal(dest: Path) -> list[MergeRecord]:
    """DEST's finished merges, read without changing it; refuses a DEST that cannot
    take a merge now (locked, left recording, not a store, newer schema, a segment
    directory that is a link: ``UnsafeStore``, before anything is written)."""
    checked_segment_dir(dest)
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return []
    with FrameStore.open(dest, readonly=True) as st:
        if st.writer_running():
            raise StoreLocked(str(dest), "a recorder or another maintenance command")
        stale = st.catalog.episodes.stale_recordings()
        if stale:
            raise InvalidInput(
                f"{dest}: episode {stale[0]} was left 'recording'; run `framestore recover` first"
            )
        return [m for m in st.catalog.merges.records() if m.state == "done"]


def _moved_from(path: Path, record: MergeRecord) -> bool:
    """Whether ``record`` moved the store at ``path`` itself (not a copy or backup of it
    that shares its store id): only then may a ``--move`` re-run delete what is left."""
    return record.mode == "move" and os.path.realpath(record.source_path) == os.path.realpath(path)


def _inspect(path: Path, done: list[MergeRecord], move: bool) -> _Plan:
    """Check one source without changing it; say what to do with it."""
    try:
        st = FrameStore.open(path, readonly=True)
    except NotAStore:
        if any(_moved_from(path, m) for m in done):  # removal stopped or finished
            return _Plan(path, "finish removal" if move and path.exists() else "already")
        raise
    with st:
        fp = fingerprint(st)
        # A store of 0.1.0 has no id until a writer opens it: its fingerprint names it.
        sid = st.catalog.meta.store_id() or f"fingerprint:{fp}"
        earlier = [m for m in done if m.source_id == sid]
        if earlier and earlier[-1].fingerprint == fp:  # unchanged since: nothing new
            kind = "finish removal" if move and _moved_from(path, earlier[-1]) else "already"
            return _Plan(path, kind, fp, sid)
        # else a copy that diverged, or the store recorded more: its new episodes merge
        if st.writer_running():
            raise StoreLocked(str(path), "a recorder")
        stale = st.catalog.episodes.stale_recordings()
        if stale:
            raise InvalidInput(
                f"{path}: episode {stale[0]} was left 'recording'; run `framestore recover` on it first"
            )
        report = verify(st, quick=True)
        if not report.ok:
            raise InvalidInput(
                f"{path} fails `framestore verify --quick` ({len(report.problems)} problem(s), "
                f"first: {report.problems[0]})"
            )
    return _Plan(path, "merge", fp, sid)


# --------------------------------------------------------------------------- merging
def _pages(rows: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    page: list[tuple] = []
    for r in rows:
        page.append(r)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


@dataclass(frozen=True)
class _Selection:
    """What of a source is new to DEST: its episode and run rows to insert, the source
    segments their frames are in, and where its other runs/episodes already are."""

    runs: list[dict[str, Any]]
    episodes: list[dict[str, Any]]
    segments: list[int]
    runs_here: dict[int, int]  # source run id -> the run of DEST that holds it
    episodes_here: dict[int, int]  # source episode id -> the episode of DEST


def _same_episode(ours, theirs) -> bool:
    """Whether DEST's episode ``ours`` is the source's episode ``theirs``, merged before
    (``EpisodeInfo``s): a copy's own later recordings reuse ids, never start times."""
    key = (ours.index, ours.seed, ours.started, ours.ended)
    if key != (theirs.index, theirs.seed, theirs.started, theirs.ended):
        return False
    if ours.status == "deleted":  # removed from DEST since: still merged, not again
        return True
    return (ours.steps, ours.total_reward) == (theirs.steps, theirs.total_reward)


def _select(st: FrameStore, src: FrameStore, source_id: str) -> _Selection:
    """Split the source into what DEST holds already (see the module docstring) and
    what it does not."""
    runs_here, eps_here = _merged_before(st, src, source_id)
    eps = [e for e in src.catalog.merges.export_episodes() if e["id"] not in eps_here]
    wanted = {e["run_id"] for e in eps}
    runs = [r for r in src.catalog.merges.export_runs() if r["id"] in wanted - set(runs_here)]
    ids = [e["id"] for e in eps]
    rows = src.catalog.merges.iter_step_rows(ids)
    segments = {r[8] for r in rows if r[8] is not None}
    # frames of streams other than render (step_frames: the segment at index 3)
    segments |= {r[3] for r in src.catalog.merges.iter_stream_rows(ids) if r[3] is not None}
    segments = sorted(segments)
    return _Selection(runs, eps, segments, runs_here, eps_here)


def _merged_before(
    st: FrameStore, src: FrameStore, source_id: str
) -> tuple[dict[int, int], dict[int, int]]:
    """The source's runs and episodes that DEST holds from earlier merges of it, as
    ``{source id: DEST id}`` (runs, episodes): named by a ``done`` merge record and
    still the same run or episode on both sides."""
    runs_here: dict[int, int] = {}
    eps_here: dict[int, int] = {}
    dest_runs = {r.id: r for r in st.runs()}
    for record in st.catalog.merges.records():
        if record.state != "done" or record.source_id != source_id:
            continue
        for theirs, ours in record.ids.get("runs", {}).items():
            mine = dest_runs.get(ours)
            if mine is not None and theirs not in runs_here:
                runs_here[theirs] = ours
        for theirs, ours in record.ids.get("episodes", {}).items():
            if theirs in eps_here:
                continue
            try:
                if _same_episode(
                    st.episode(ours, include_deleted=True), src.episode(theirs)
                ):  # fmt: skip
                    eps_here[theirs] = ours
            except KeyError:  # EpisodeNotFound: gone from the source, or from DEST
                continue
    src_runs = {r.id: r for r in src.runs()}
    runs_here = {
        theirs: ours
        for theirs, ours in runs_here.items()
        if theirs in src_runs
        and (src_runs[theirs].env_id, src_runs[theirs].created)
        == (dest_runs[ours].env_id, dest_runs[ours].created)
    }
    return runs_here, eps_here


@dataclass(frozen=True)
class _Ids:
    """The ids a source's new runs and episodes get here (taken under the writer lock,
    before the segments are placed: the provenance note names them), and the full maps
    the journal records (those merged before included)."""

    runs: dict[int, int]
    episodes: dict[int, int]
    runs_all: dict[int, int]
    episodes_all: dict[int, int]


def _new_ids(st: FrameStore, sel: _Selection) -> _Ids:
    next_run, next_ep = st.catalog.episodes.next_ids()
    run_map = {r["id"]: next_run + i for i, r in enumerate(sel.runs)}
    ep_map = {e["id"]: next_ep + i for i, e in enumerate(sel.episodes)}
    return _Ids(run_map, ep_map, {**sel.runs_here, **run_map}, {**sel.episodes_here, **ep_map})


def _note(
    st: FrameStore,
    src: FrameStore,
    plan: _Plan,
    merge_id: int,
    journal: list[tuple[int, int]],
    ids: _Ids,
    move: bool,
) -> float:
    """Write the merge's provenance note (``framestore.state.merging``, step 2) under the last
    journaled id; returns the ``finished`` time it names (the commit records the same)."""
    placed = [segment_path(st.root, new) for new, _old in journal[:-1]]
    tags = sorted({t for t in map(header_tag, placed) if t})
    counts = {r.episode: r.rows for r in src.catalog.stats.episode_row_counts()}
    record = next(m for m in st.catalog.merges.records() if m.id == merge_id)
    finished = time.time()
    write_merge_note(
        st,
        journal[-1][0],
        {
            "store_id": st.catalog.meta.store_id(), "merge_id": merge_id,
            "source_id": plan.source_id, "source_path": record.source_path,
            "fingerprint": plan.fingerprint, "mode": "move" if move else "copy",
            "started": record.started, "finished": finished,
            "segments": journal, "tags": tags,
            "runs": list(ids.runs_all.items()), "episodes": list(ids.episodes_all.items()),
            "counts": {"runs": len(ids.runs_all), "episodes": len(ids.episodes_all),
                       "steps": sum(counts.get(e, 0) for e in ids.episodes)},
        },
    )  # fmt: skip
    return finished


def _commit(
    st: FrameStore,
    src: FrameStore,
    merge_id: int,
    pairs: list[tuple[int, int]],
    sel: _Selection,
    ids: _Ids,
    note: tuple[int, float],
) -> SourceResult:
    """Insert the source's new runs, episodes and steps re-keyed, the segments' rows
    (the note's too), the merged-in store tags and the journal's ``done``: ONE
    transaction."""
    seg_map = {old: new for new, old in pairs}
    runs, eps = sel.runs, sel.episodes
    run_map, ep_map = ids.runs, ids.episodes
    run_map_all, ep_map_all = ids.runs_all, ids.episodes_all
    note_id, finished = note
    with st.transaction() as cat:
        for r in runs:
            cat.merges.import_run(run_map[r["id"]], r)
        for e in eps:
            cat.merges.import_episode(
                ep_map[e["id"]],
                run_map_all[e["run_id"]],
                e,
                continues=ep_map_all.get(e["continues_episode"]),
                stream_key=e["stream_key"],
            )
        steps = 0
        for page in _pages(src.catalog.merges.iter_step_rows(ep_map), _PAGE):
            steps += cat.merges.import_steps(
                (ep_map[r[0]], *r[1:8], None if r[8] is None else seg_map[r[8]], *r[9:])
                for r in page
            )
        _import_streams(cat, src, ep_map, seg_map)
        tags = _merged_tags(st)
        for new, _old in pairs:
            path = segment_path(st.root, new)
            cat.segments.record(new, "sealed", path.stat().st_size, header_id=header_id(path))
            tags |= {header_tag(path)} - {0}
        cat.segments.record(note_id, "sealed", segment_path(st.root, note_id).stat().st_size)
        cat.meta.set(MERGED_TAGS, sorted(tags))
        cat.merges.finish(merge_id, {"runs": run_map_all, "episodes": ep_map_all}, steps, finished)
    return SourceResult(
        str(src.root), "merged", len(runs), len(eps), steps, len(pairs), episode_ids=ep_map
    )


def _merged_tags(st: FrameStore) -> set[int]:
    """The merged-in store tags recorded so far; for a store that merged before they
    were recorded, those of its merged segments' files (so verify keeps accepting them)."""
    listed = st.catalog.meta.get(MERGED_TAGS)
    if isinstance(listed, list):
        return set(listed)
    paths = (segment_path(st.root, sid) for sid in st.catalog.segments.merged())
    return {header_tag(p) for p in paths if p.is_file()} - {0}


def _import_streams(cat, src: FrameStore, ep_map: dict, seg_map: dict) -> None:
    """The source episodes' streams other than render, their frame pointers and their
    observations, re-keyed (in ``_commit``'s transaction)."""
    cat.merges.import_streams(
        (ep_map[r[0]], *r[1:]) for r in src.catalog.merges.export_streams(ep_map)
    )
    for page in _pages(src.catalog.merges.iter_stream_rows(ep_map), _PAGE):
        cat.merges.import_stream_rows(
            (ep_map[r[0]], r[1], r[2], None if r[3] is None else seg_map[r[3]], *r[4:])
            for r in page
        )
    for page in _pages(src.catalog.merges.iter_observation_rows(ep_map), _PAGE):
        cat.merges.import_observations((ep_map[e], step, obs) for e, step, obs in page)


def _merge_source(
    st: FrameStore, plan: _Plan, move: bool, progress: Progress | None, hook: Hook | None
) -> SourceResult:
    """Merge one checked source (the steps of ``framestore.state.merging``)."""
    with FrameStore.open(plan.path, create=False) as src, writer_lock(src):
        if fingerprint(src) != plan.fingerprint:
            raise InvalidInput(f"{plan.path} changed while the merge was being prepared")
        sel = _select(st, src, plan.source_id)
        if not sel.episodes:  # e.g. an identical copy of a source merged before
            return SourceResult(str(plan.path), "already merged")
        src_ids = sel.segments
        new_ids = new_segment_ids(st, len(src_ids) + 1)  # the last: the provenance note
        pairs = list(zip(new_ids, src_ids, strict=False))
        source_id = plan.source_id
        # journaled with the id each file's header names (a segment the source merged
        # itself keeps its first id there), so an undo recognises the files it placed
        journal = [(new, header_id(segment_path(src.root, old))) for new, old in pairs]
        journal.append((new_ids[-1], new_ids[-1]))
        merge_id = st.catalog.merges.begin(
            source_id, os.path.realpath(plan.path), plan.fingerprint, "move" if move else "copy",
            journal,
        )  # fmt: skip
        _call(hook, "journaled")
        linked = place_segments(src.root, st.root, pairs, link=move, progress=progress)
        ids = _new_ids(st, sel)
        finished = _note(st, src, plan, merge_id, journal, ids, move)
        _call(hook, "placed")
        result = _commit(st, src, merge_id, pairs, sel, ids, (new_ids[-1], finished))
        result.path = str(plan.path)
        result.segments_linked = linked
        result.bytes = sum(segment_path(st.root, new).stat().st_size for new, _ in pairs)
        _call(hook, "committed")
        if move:
            src.close()
            remove_store_files(plan.path)
            _call(hook, "removed")
    return result


def _call(fn: Callable | None, *args: object) -> None:
    if fn is not None:
        fn(*args)


def merge(
    dest: str | os.PathLike,
    sources: Iterable[str | os.PathLike],
    *,
    move: bool = False,
    progress: Progress | None = None,
    _hook: Hook | None = None,
) -> MergeReport:
    """Merge the stores ``sources`` into ``dest`` (created when missing).

    Args:
        dest: the destination store directory.
        sources: source store directories, merged in this order.
        move: hard-link segments instead of copying them (copied when the file systems
            differ) and delete each source store once its rows are committed.
        progress: called with ``(bytes done, bytes total)`` while a source's segments
            are placed.

    Raises:
        InvalidInput, NotAStore, SchemaTooNew, StoreLocked: a bad DEST or SRC; nothing
            was changed.
    """
    t0 = time.perf_counter()
    _refuse_urls([dest, *sources])
    dest_path = Path(dest)
    src_paths = [Path(s) for s in sources]
    _check_paths(dest_path, src_paths)
    done = _dest_journal(dest_path)
    plans = [_inspect(p, done, move) for p in src_paths]
    report = MergeReport(str(dest_path), move)
    # durable: a --move deletes each source once its commit is on disk, not before
    with FrameStore.open(dest_path, durability="durable") as st, writer_lock(st):
        report.interrupted_undone = undo_incomplete_merges(st)
        for plan in plans:
            # a copy of an earlier source of this command (same store id), or a source
            # another merge took first, merges only what DEST does not hold (_select)
            if plan.kind == "already":
                report.sources.append(SourceResult(str(plan.path), "already merged"))
            elif plan.kind == "finish removal":
                remove_store_files(plan.path)
                report.sources.append(SourceResult(str(plan.path), "removal finished"))
            else:
                report.sources.append(_merge_source(st, plan, move, progress, _hook))
        sync_segments(st)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
