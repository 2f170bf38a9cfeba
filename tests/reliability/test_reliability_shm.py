"""The process writer's shared memory under pressure and after kills (issue 23, items
5-8), on real tmpfs mounts and with real SIGKILLs of whole process groups:

- a ``/dev/shm`` with 0 bytes free is one line and exit 6 at the counters block, never
  SIGBUS (item 5);
- every block's pages are reserved when it is created, so recorders cannot overcommit
  ``/dev/shm`` (item 6);
- blocks left by a recorder whose whole process group was SIGKILLed (its resource
  tracker with it) are removed by ``recover`` and by the next recorder (item 7);
- a storage process whose producer died right after creating its blocks exits without
  a traceback (item 8).

The tmpfs tests mount their own ``/dev/shm`` in a private mount namespace (``unshare
-m``, root only); they are skipped with the reason when that is impossible.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import alive, assert_one_line_error, run_cli, shm_blocks, wait_for

from framestore.settings import resolve
from framestore.write.process._launch import BOOTSTRAP
from framestore.write.process._ring import SHM_DIR

REPO = str(Path(__file__).resolve().parents[2])
ENV = {**os.environ, "PYTHONPATH": REPO}


def private_shm(size: str, script: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the shell ``script`` in a private mount namespace whose ``/dev/shm`` is a new
    tmpfs of ``size`` (the machine's own ``/dev/shm`` is never touched)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /dev/shm mount")
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", SHM_DIR],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private namespace: {probe.stderr.strip()}")
    mount = f"mount -t tmpfs -o size={size} tmpfs {SHM_DIR}"
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{mount} && {script}"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


# --------------------------------------------------------------------------- item 5
def test_no_room_at_all_in_dev_shm_is_one_line_not_sigbus(tmp_path):
    store = tmp_path / "s.store"
    script = (
        f"head -c 1048576 /dev/zero > {SHM_DIR}/fill 2>/dev/null; "
        f"{sys.executable} -m tools record {store} --env CartPole-v1 --max-steps 20 "
        "--writer process"
    )
    result = private_shm("64k", script)
    assert result.returncode != 128 + signal.SIGBUS, result.stderr  # 135 before
    line = assert_one_line_error(result, code=6)
    assert "/dev/shm" in line and "shm-size" in line, line


# --------------------------------------------------------------------------- item 6
_RESERVE = textwrap.dedent(
    """
    import os
    from framestore.write.process._ring import FrameRing, shm_free
    from framestore.errors import SharedMemoryFull

    free = shm_free()
    ring = FrameRing.create(1 << 20, 5)  # 5 MiB of an 8 MiB tmpfs, pages never touched
    taken = free - shm_free()
    print("taken", taken)
    try:
        FrameRing.create(1 << 20, 5)  # a second recorder's ring: it does not fit
    except SharedMemoryFull as e:
        print("refused", e)
    else:
        print("overcommitted")
    ring.close()
    ring.unlink()
    """
)


def test_a_ring_reserves_its_pages_so_a_second_cannot_overcommit(tmp_path):
    (tmp_path / "reserve.py").write_text(_RESERVE)
    result = private_shm("8m", f"{sys.executable} {tmp_path / 'reserve.py'}")
    assert result.returncode == 0, result.stderr
    out = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert int(out["taken"]) >= 5 << 20  # reserved at creation (before: 0)
    assert "refused" in out, result.stdout
    assert "shm-size" in out["refused"] and "\n" not in out["refused"]


_THREE = textwrap.dedent(
    """
    for i in 1 2 3; do
      {python} -m tools record {tmp}/s$i.store --env CartPole-v1 --max-steps 60 \\
        --writer process > /dev/null 2> {tmp}/err$i &
      pids="$pids $!"
    done
    for pid in $pids; do wait $pid; echo "rc $?"; done
    """
)


def test_three_recorders_on_a_small_dev_shm_never_die_of_sigbus(tmp_path):
    """CartPole frames are 703 KiB; three recorders on 2 MiB each take half of what is
    free at that moment, and what they take is reserved: each records or says in one
    line that there is no room; none is killed by SIGBUS."""
    script = _THREE.format(python=sys.executable, tmp=tmp_path)
    result = private_shm("2m", script, timeout=300)
    codes = [int(line.split()[1]) for line in result.stdout.split("\n") if line.startswith("rc")]
    assert len(codes) == 3, result.stdout + result.stderr
    for i, rc in enumerate(codes, 1):
        err = (tmp_path / f"err{i}").read_text()
        assert rc in (0, 6), (rc, err)
        assert "Traceback" not in err, err
        if rc == 6:
            assert "shm-size" in err
    assert 0 in codes


# --------------------------------------------------------------------------- item 7
def killed_recorder(store: Path) -> int:
    """A ``record --writer process`` in its own process group, SIGKILLed as a whole
    (producer, storage process and resource tracker) once both its shared memory blocks
    exist. Returns the producer's pid; its blocks are left behind."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tools", "record", str(store), "--env", "ALE/Assault-v5",
         "--episodes", "50", "--writer", "process"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: len(shm_blocks(child.pid)) >= 2, timeout=120, interval=0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    # the storage process and the tracker are in the group: gone too
    wait_for(lambda: not _group_alive(child.pid), timeout=30, interval=0.05)
    return child.pid


def _group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and alive(int(entry)):
                    return True
            except ProcessLookupError:
                pass
    return False


def test_recover_removes_the_shared_memory_of_a_killed_process_group(tmp_path):
    store = tmp_path / "s.store"
    pid = killed_recorder(store)
    left = shm_blocks(pid)
    assert len(left) >= 2  # nobody alive could unlink them
    result = run_cli("recover", store)
    assert result.exit_code in (0, 3), result.output
    assert "shared memory block(s) of dead recorders removed" in result.output
    assert shm_blocks(pid) == []
    assert run_cli("verify", store).exit_code == 0


def test_the_next_recorder_removes_the_shared_memory_of_a_killed_one(tmp_path):
    pid = killed_recorder(tmp_path / "a.store")
    assert len(shm_blocks(pid)) >= 2
    result = run_cli(
        "record", tmp_path / "b.store", "--env", "CartPole-v1", "--max-steps", 5,
        "--writer", "process",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert shm_blocks(pid) == []


def test_blocks_of_a_live_recorder_are_kept(tmp_path):
    """The removal only takes blocks whose producer is dead: this process's own block
    (alive) survives a removal run."""
    from framestore.write.process._ring import Control
    from framestore.write.service import remove_dead_shared_memory

    block = Control.create()
    try:
        removed = remove_dead_shared_memory()
        assert block.name not in [n for n, _ in removed]
        assert os.path.exists(os.path.join(SHM_DIR, block.name))
    finally:
        block.close()
        block.unlink()


# --------------------------------------------------------------------------- item 8
def test_a_storage_process_whose_producer_died_at_once_exits_without_a_traceback(tmp_path):
    """The producer created its counters block and died; its resource tracker removed
    the block before the storage process attached it."""
    cmd_r, cmd_w = os.pipe()
    reply_r, reply_w = os.pipe()
    args = {
        "storage_args": (tmp_path / "s.store", tmp_path / "s.store" / "framestore.db",
                         resolve("CartPole-v1").settings),
        "control_name": f"framestore_{os.getpid()}_{'0' * 12}",  # never created
        "parent_pid": os.getpid(),
        "commands": cmd_r,
        "replies": reply_w,
    }  # fmt: skip
    stdin = pickle.dumps(list(sys.path)) + pickle.dumps(args)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", BOOTSTRAP],
            input=stdin,
            capture_output=True,
            pass_fds=(cmd_r, reply_w),
            timeout=120,
        )
    finally:
        for fd in (cmd_r, cmd_w, reply_w):
            os.close(fd)
    with os.fdopen(reply_r, "rb") as replies:
        answer = replies.read()
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    assert proc.stderr == b""
    assert b"failed" in answer  # a producer still listening would be told
    assert not (tmp_path / "s.store").exists()  # nothing was opened or created
