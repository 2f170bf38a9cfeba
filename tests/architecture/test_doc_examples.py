"""Every Python and shell code block of README.md and docs/*.md runs as written (issue 18,
item 3 and defect 7: the vector examples failed with "Namespace ALE not found").

The blocks of one document run in order in one fresh directory, as a reader would type
them: a block may use what an earlier one wrote (README's Parquet example reads the
export of the block before it). Python blocks run with ``python3 -c``, shell blocks with
``bash -e``, from that directory, importing this checkout. Three things differ from a
reader's machine, each on purpose:

- ``python3 -m pip install ...`` is not run (a ``python3`` on the PATH says so and exits
  0): the test environment is installed, and the suite never touches the network.
- ``STEPS`` is set small; blocks that would record for minutes read their step count
  from it (``int(os.environ.get("STEPS", 1000))``).
- ``PRE_BLOCK`` lists what a few blocks need that no earlier block of their document
  makes (the worker stores ``merge`` combines), made here with ``framestore record``.

A block that cannot run here (minutes of benchmarking, the whole test suite, a Ray
cluster recording 32 full episodes, a fragment of a larger program) is preceded in its
document by ``<!-- illustrative: REASON -->``; it is listed as skipped with that reason.
Blocks without a language (diagrams, tables) are not code.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
ILLUSTRATIVE = re.compile(r"<!--\s*illustrative:\s*(?P<reason>\S.*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
#: The step count blocks read from ``$STEPS`` here (their default is for a reader).
SMALL_STEPS = "30"
TIMEOUT = 300

# What a block needs that no earlier block of its document makes: (document, first
# words of the block) -> shell commands run before it in the document's directory.
PRE_BLOCK = {
    ("RL.md", "framestore merge all.store worker-*.store"): [
        f"framestore record worker-{i}.store --env CartPole-v1 --max-steps 10 --seed {i}"
        for i in range(2)
    ],
}

_PIP_SHIM = """#!/bin/sh
# python3 for the docs test: `python3 -m pip ...` is not run (the test environment is
# installed and the suite stays off the network); anything else is the real python.
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    echo "docs test: not run: python3 $*"
    exit 0
fi
exec "{python}" "$@"
"""


@dataclass
class Block:
    document: Path
    line: int
    language: str  # "python" or "shell"
    code: str
    illustrative: str | None  # the reason, for a block marked illustrative

    @property
    def id(self) -> str:
        return f"{self.document.name}:{self.line}"

    def pre(self) -> list[str]:
        for (doc, start), commands in PRE_BLOCK.items():
            if doc == self.document.name and self.code.startswith(start):
                return commands
        return []


def blocks_of(document: Path) -> list[Block]:
    text = document.read_text()
    out = []
    for m in FENCE.finditer(text):
        language = LANGUAGES.get(m["lang"])
        if language is None:
            continue
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1]
        mark = ILLUSTRATIVE.fullmatch(before.strip())
        line = text.count("\n", 0, m.start()) + 1
        out.append(Block(document, line, language, m["body"], mark and mark["reason"]))
    return out


BLOCKS = [b for doc in DOCUMENTS for b in blocks_of(doc)]


def _param(block: Block):
    marks = [pytest.mark.skip(reason=f"illustrative: {block.illustrative}")]
    return pytest.param(block, id=block.id, marks=marks if block.illustrative else [])


@dataclass
class DocumentRun:
    """One document's directory and the outcome of each of its blocks run so far."""

    directory: Path
    env: dict[str, str]
    outcomes: dict[int, str | None] = field(default_factory=dict)  # line -> failure

    def run(self, block: Block) -> str | None:
        """Run ``block`` (once); the failure as text, or None."""
        if block.line not in self.outcomes:
            self.outcomes[block.line] = self._run(block)
        return self.outcomes[block.line]

    def _run(self, block: Block) -> str | None:
        for command in block.pre():
            failure = self._exec(["bash", "-e", "-c", command], f"(before {block.id}) {command}")
            if failure:
                return failure
        if block.language == "python":
            argv = [sys.executable, "-c", block.code]
        else:
            argv = ["bash", "-e", "-o", "pipefail", "-c", block.code]
        return self._exec(argv, block.id)

    def _exec(self, argv: list[str], what: str) -> str | None:
        proc = subprocess.run(
            argv,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        if proc.returncode != 0 or "Traceback" in proc.stderr:
            return f"{what} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, DocumentRun]:
    shim = tmp_path_factory.mktemp("bin")
    python3 = shim / "python3"
    python3.write_text(_PIP_SHIM.replace("{python}", sys.executable))
    python3.chmod(python3.stat().st_mode | stat.S_IXUSR)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(shim), os.path.dirname(sys.executable), os.environ["PATH"]]),
        "STEPS": SMALL_STEPS,
        "QT_QPA_PLATFORM": "offscreen",
    }
    return {
        doc.name: DocumentRun(tmp_path_factory.mktemp(doc.stem.lower()), env) for doc in DOCUMENTS
    }


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_code_block_runs_as_written(block: Block, runs):
    run = runs[block.document.name]
    # the blocks before it in its document first, as a reader runs them
    for earlier in BLOCKS:
        if earlier.document == block.document and earlier.line < block.line:
            if not earlier.illustrative and run.run(earlier):
                pytest.fail(f"{earlier.id}, which {block.id} follows, failed")
    failure = run.run(block)
    assert failure is None, failure


def test_every_document_has_code_blocks_found():
    """The parser finds the blocks a reader sees (a changed fence must not hide them)."""
    by_doc = {b.document.name for b in BLOCKS}
    assert {"README.md", "RL.md", "BENCHMARKS.md"} <= by_doc
    for b in BLOCKS:
        assert b.code.strip(), b.id
