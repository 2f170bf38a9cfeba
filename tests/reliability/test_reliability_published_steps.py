"""The steps table of a published store (issue 23, item 3): it is the one table that grows
with the data, so ``ls`` and ``info`` never read it (they count from the per-episode
totals publish writes; a copy without them gets them from one streaming pass), and the
verbs that read it (``verify``, ``export``) load it a row group at a time, bounded by
the manifest's counts.

Hostile files are made as an attacker would: a steps table of millions of repeated rows
(a decompression bomb of a few MB), the manifest's size and SHA-256 fixed up (and its
counts, where said). Every command runs in a child whose peak resident memory is
measured (``getrusage`` in a wrapper process); the bound is generous (before: past
4 GiB), never a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, record_episodes

REPO = str(Path(__file__).resolve().parents[2])
PEAK_BOUND = 1 << 30  # bytes of resident memory any command here may reach
STEPS = "catalogue/steps.parquet"
TOTALS = "catalogue/episode_totals.parquet"

# Runs argv[1:] and prints its exit code, output and peak resident set (KiB) as JSON.
_MEASURE = """
import json, resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=300)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": r.returncode, "out": r.stdout, "err": r.stderr, "peak_kib": peak}))
"""


class Measured(subprocess.CompletedProcess):
    peak: int  # bytes


def cli(*args) -> Measured:
    """``framestore ARGS`` in a child; its peak resident memory in ``.peak``."""
    wrapper = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "tools", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=360,
        env={**os.environ, "PYTHONPATH": REPO},
        check=True,
    )
    got = json.loads(wrapper.stdout)
    result = Measured(args, got["rc"], got["out"], got["err"])
    result.peak = got["peak_kib"] * 1024
    return result


@pytest.fixture(scope="module")
def template(tmp_path_factory, assault_frames):
    """A store of three episodes (40, 25 and 10 steps), published to a directory."""
    root = tmp_path_factory.mktemp("pub")
    store = root / "s.store"
    record_episodes(store, assault_frames, episodes=1, steps=40)
    record_episodes(store, assault_frames[40:], episodes=1, steps=25)
    record_episodes(store, assault_frames[65:], episodes=1, steps=10)
    result = cli("publish", store, root / "pub")
    assert result.returncode == 0, result.stderr
    return root / "pub"


@pytest.fixture
def pub(template, tmp_path):
    path = tmp_path / "pub"
    shutil.copytree(template, path)
    return path


def manifest(pub: Path) -> dict:
    return json.loads((pub / "manifest.json").read_text())


def rewrite(pub: Path, name: str, table, counts: dict | None = None, group_rows=None) -> None:
    """Object ``name`` replaced by Parquet ``table`` (an iterable of Arrow tables, row
    groups of ``group_rows``, by default pyarrow's at most 1 Mi rows), the manifest's
    size and SHA-256 fixed up (and its ``counts``), as an attacker who can write the
    store would."""
    import pyarrow.parquet as pq

    path = pub / name
    partial = path.with_suffix(".partial")  # the rows may come from the object itself
    writer = None
    for part in table:
        if writer is None:
            writer = pq.ParquetWriter(partial, part.schema, compression="zstd")
        writer.write_table(part, row_group_size=group_rows)
    writer.close()
    partial.replace(path)
    data = path.read_bytes()
    m = manifest(pub)
    m["objects"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    m.update(counts or {})
    (pub / "manifest.json").write_text(json.dumps(m))


def repeated(pub: Path, rows: int, *, distinct: bool = False):
    """``rows`` copies of the first step row in 1 Mi-row groups (with ``distinct``, each
    its own step number), a block at a time: the test never holds the table either."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = pq.read_table(pub / STEPS).slice(0, 1)
    block = 1 << 20
    for start in range(0, rows, block):
        n = min(block, rows - start)
        part = first.take(pa.array([0] * n))
        if distinct:
            at = part.schema.get_field_index("step")
            part = part.set_column(at, "step", pa.array(range(start, start + n), pa.int64()))
        yield part


def as_version_1(pub: Path) -> None:
    """``pub`` as a framestore before the totals wrote it: no totals object, version 1."""
    (pub / TOTALS).unlink()
    m = manifest(pub)
    del m["objects"][TOTALS]
    m["version"] = 1
    (pub / "manifest.json").write_text(json.dumps(m))


def listing(pub: Path) -> tuple[dict, dict]:
    """``ls --json`` and ``info --json`` of ``pub`` (its path left out)."""
    ls, info = cli("ls", pub, "--json"), cli("info", pub, "--json")
    assert ls.returncode == 0 and info.returncode == 0, ls.stderr + info.stderr
    shown = json.loads(info.stdout)
    del shown["store"]
    return json.loads(ls.stdout), shown


# --------------------------------------------------------------------------- structure
def test_ls_and_info_never_open_the_steps_table(pub, tmp_path):
    before = listing(pub)
    assert [e["steps"] for e in before[0]["episodes"]] == [40, 25, 10]
    (pub / STEPS).unlink()  # gone: any read of it would fail
    assert listing(pub) == before
    for args in (["verify", pub], ["export", pub, "--episode", 1, "-o", tmp_path / "x.npz"]):
        line = assert_one_line_error(cli(*args), code=5)
        assert STEPS in line and "object missing" in line, line


def test_ls_of_five_million_steps_reads_episode_totals_only(pub):
    import pyarrow as pa
    import pyarrow.parquet as pq

    many = 5_000_000
    rewrite(pub, STEPS, repeated(pub, many, distinct=True))
    totals = pq.read_table(pub / TOTALS).to_pylist()
    assert totals[0]["episode_id"] == 1
    frames = sum(t["frames"] for t in totals[1:]) + many
    totals[0].update(steps=many, frames=many)
    rows = pa.Table.from_pylist(totals, schema=pq.read_schema(pub / TOTALS))
    rewrite(pub, TOTALS, [rows], {"steps": frames, "frames": frames})
    assert (pub / STEPS).stat().st_size < 32 << 20
    (pub / STEPS).unlink()  # ls and info must not need it
    ls, info = cli("ls", pub, "--json"), cli("info", pub, "--json")
    assert ls.returncode == 0 and info.returncode == 0, ls.stderr + info.stderr
    assert json.loads(ls.stdout)["episodes"][0]["steps"] == many
    assert json.loads(info.stdout)["steps"] == frames
    assert max(ls.peak, info.peak) < PEAK_BOUND, (ls.peak, info.peak)


def test_a_copy_without_totals_lists_the_same_from_one_streaming_pass(pub, tmp_path):
    before = listing(pub)
    older = tmp_path / "older"
    shutil.copytree(pub, older)
    as_version_1(older)
    assert listing(older) == before
    assert cli("verify", older).returncode == 0


def test_a_copy_without_totals_lists_an_episode_without_steps(pub):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    as_version_1(pub)
    steps = pq.read_table(pub / STEPS)
    kept = steps.filter(pc.not_equal(steps["episode_id"], 3))
    rewrite(pub, STEPS, [kept], {"steps": 65, "frames": 65})
    ls = cli("ls", pub, "--json")
    assert ls.returncode == 0, ls.stderr
    assert [(e["steps"], e["bytes"]) for e in json.loads(ls.stdout)["episodes"]][2] == (0, 0)


def test_totals_that_do_not_add_up_to_the_manifest_are_refused(pub):
    import pyarrow as pa
    import pyarrow.parquet as pq

    totals = pq.read_table(pub / TOTALS).to_pylist()
    totals[0]["steps"] += 1
    rows = pa.Table.from_pylist(totals, schema=pq.read_schema(pub / TOTALS))
    rewrite(pub, TOTALS, [rows])
    for verb in ("ls", "info"):
        line = assert_one_line_error(cli(verb, pub), code=5)
        assert TOTALS in line and "76 steps and 75 frames in all, the manifest counts 75" in line


def test_totals_that_disagree_with_the_steps_are_found_when_steps_are_read(pub):
    import pyarrow as pa
    import pyarrow.parquet as pq

    totals = pq.read_table(pub / TOTALS).to_pylist()
    for row, change in zip(totals[:2], (1, -1), strict=True):  # the sums stay the same
        row["steps"] += change
        row["frames"] += change
    rows = pa.Table.from_pylist(totals, schema=pq.read_schema(pub / TOTALS))
    rewrite(pub, TOTALS, [rows])
    assert cli("ls", pub).returncode == 0  # ls shows what the totals say
    line = assert_one_line_error(cli("verify", pub), code=5)
    assert TOTALS in line and "episode 1: totals say 41 steps" in line and "rows hold 40" in line


# --------------------------------------------------------------------------- the bomb
BOMB_ROWS = 30_000_000  # the issue's: 30 M repeated rows in under 2 MB


def test_a_steps_bomb_is_refused_by_every_verb_that_reads_steps(pub, tmp_path):
    rewrite(pub, STEPS, repeated(pub, BOMB_ROWS))
    assert (pub / STEPS).stat().st_size < 4 << 20
    for args in (["verify", pub], ["export", pub, "--episode", 1, "-o", tmp_path / "x.npz"]):
        result = cli(*args)
        line = assert_one_line_error(result, code=5)
        assert STEPS in line and f"{BOMB_ROWS} rows where the manifest allows 75" in line, line
        assert result.peak < PEAK_BOUND, (args[0], result.peak)
    for verb in ("ls", "info"):  # they never open it
        result = cli(verb, pub)
        assert result.returncode == 0, result.stderr
        assert result.peak < PEAK_BOUND, (verb, result.peak)


def test_a_steps_bomb_in_a_copy_without_totals_is_refused_by_ls_and_info_too(pub, tmp_path):
    as_version_1(pub)
    rewrite(pub, STEPS, repeated(pub, BOMB_ROWS))
    x = tmp_path / "x.npz"
    for args in (
        ["ls", pub],
        ["info", pub],
        ["verify", pub],
        ["export", pub, "--episode", 1, "-o", x],
    ):
        result = cli(*args)
        line = assert_one_line_error(result, code=5)
        assert STEPS in line and f"{BOMB_ROWS} rows where the manifest allows 75" in line, line
        assert result.peak < PEAK_BOUND, (args[0], result.peak)


def test_a_steps_bomb_whose_counts_were_fixed_up_too_is_refused(pub, tmp_path):
    rewrite(pub, STEPS, repeated(pub, BOMB_ROWS), {"steps": BOMB_ROWS, "frames": BOMB_ROWS})
    for verb in ("ls", "verify"):  # the totals count 75 steps, the manifest 30 M
        result = cli(verb, pub)
        line = assert_one_line_error(result, code=5)
        assert TOTALS in line and f"the manifest counts {BOMB_ROWS}" in line, line
        assert result.peak < PEAK_BOUND, (verb, result.peak)
    as_version_1(pub)  # no totals: counted from the steps, a batch at a time
    listed = cli("ls", pub)  # what they count: 30 M steps of episode 1
    assert listed.returncode == 0 and str(BOMB_ROWS) in listed.stdout, listed.stderr
    result = cli("verify", pub)  # loading them meets the first repeated row
    line = assert_one_line_error(result, code=5)
    assert STEPS in line and "UNIQUE constraint failed" in line, line
    assert max(listed.peak, result.peak) < PEAK_BOUND, (listed.peak, result.peak)


def test_a_row_group_larger_than_readers_take_is_refused_before_it_is_decoded(pub):
    import pyarrow as pa

    rows = 3 << 20
    as_version_1(pub)  # no totals to disagree first: the steps pass meets the group
    whole = pa.concat_tables(list(repeated(pub, rows)))
    rewrite(pub, STEPS, [whole], {"steps": rows, "frames": rows}, group_rows=rows)
    result = cli("ls", pub)
    line = assert_one_line_error(result, code=5)
    assert STEPS in line and f"row group 0 holds {rows} rows (at most 1048576)" in line, line
    assert result.peak < PEAK_BOUND, result.peak
