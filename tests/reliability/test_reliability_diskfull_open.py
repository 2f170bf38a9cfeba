"""A full disk is a full disk, not a bad store (issue 15, item 9): on a real tmpfs with
a few KB left, opening a healthy store (to record, list or verify) or creating one says
"no space" and exits 6, never "not a SQLite database" with exit 2. Needs root (mount);
skipped otherwise."""

from __future__ import annotations

import contextlib
import os

from conftest import assert_one_line_error, run_cli
from test_reliability_diskfull import small_fs

from tools.verify import verify

RECORD = ["--env", "CartPole-v1", "--max-steps", "5"]


def fill(directory, leave: int) -> None:
    """Write a filler file until only about ``leave`` bytes are free."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(directory / "filler", "wb") as fp, contextlib.suppress(OSError):
        fp.write(b"\0" * max(0, free - leave))
        fp.flush()
        os.fsync(fp.fileno())


def says_no_space(line: str) -> bool:
    return "no space" in line or "disk is full" in line


def test_a_full_disk_is_reported_as_such_exit_6(tmp_path):
    with small_fs(tmp_path / "mnt", "4m") as mnt:
        store = mnt / "s.store"
        assert run_cli("record", store, *RECORD).exit_code == 0
        # A read-only reader leaves SQLite's -wal/-shm files behind; after the last
        # read-write connection closes there are none, and opening must create them.
        for leftover in ("framestore.db-wal", "framestore.db-shm"):
            (store / leftover).unlink(missing_ok=True)
        fill(mnt, leave=8 * 1024)
        for verb, args in [("ls", []), ("verify", []), ("info", []), ("record", RECORD)]:
            line = assert_one_line_error(run_cli(verb, store, *args), 6)
            assert says_no_space(line) and "not a SQLite database" not in line, (verb, line)
        line = assert_one_line_error(run_cli("record", mnt / "new.store", *RECORD), 6)
        assert says_no_space(line), line

        (mnt / "filler").unlink()  # space again: the store was fine all along
        assert verify(store).ok
        assert run_cli("record", store, *RECORD).exit_code == 0
        assert verify(store).ok
