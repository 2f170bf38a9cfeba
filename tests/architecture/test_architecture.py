"""The architecture rules of docs/ARCHITECTURE.md, checked on the code as it is.

- tools and the GUI use the public API of framestore and telemetry only: no private module
  of either, no migrations module (import-linter checks the known ones; this checks every
  module, new ones included);
- SQL against the store's database lives in the catalogue, the sink's insert path, the
  database opener and the migrations (plus the benchmark's own baseline database);
- no module over 900 lines, no function over 120 lines unless a reason is written here: a
  ceiling that catches real monsters, not a counter to split code for (issue 22);
- every function at cyclomatic complexity grade C or better, as radon computes it (a
  well-kept library, not a counter of our own).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest
from radon.complexity import cc_rank, cc_visit
from radon.visitors import Function

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("framestore", "telemetry", "tools", "gui", "migrations")

#: Where SQL may be written (paths relative to the repository, prefixes).
SQL_ALLOWED = (
    "framestore/catalog/",  # the catalogue: every query of framestore.db
    "telemetry/_insert.py",  # the sink's insert path
    "telemetry/db.py",  # opening a store's database: pragmas, WAL, schema checks
    "migrations/",  # the schema
    "tools/bench/",  # the SQLite-base64 baseline writes its own database, not a store's
)
_SQL = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
    r"CREATE\s+(TABLE|INDEX)|PRAGMA\s+\w+|VACUUM\b)"
)  # case-sensitive: SQL is written in capitals here, prose is not

MAX_MODULE_LINES = 900
MAX_FUNCTION_LINES = 120
#: Functions allowed to be longer, each with the reason.
LONG_FUNCTIONS: dict[str, str] = {}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _private(module: str) -> bool:
    return any(part.startswith("_") and part != "__init__" for part in module.split(".")[1:])


def test_tools_and_gui_use_the_public_api_only():
    graph = grimp.build_graph(*PACKAGES)
    bad = []
    for module in sorted(graph.modules):
        if not module.startswith(("tools", "gui")):
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            top = imported.split(".")[0]
            if top == "migrations" or (top in ("framestore", "telemetry") and _private(imported)):
                bad.append(f"{module} imports {imported}")
    assert not bad, "\n".join(bad)


def test_private_attributes_of_framestore_objects_stay_inside_framestore():
    pattern = re.compile(r"\b(store|st|rec|recorder|reader|svc|service)\._[a-z]\w*")
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(("tools/", "gui/")):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{rel}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_sql_lives_only_where_the_architecture_allows():
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(SQL_ALLOWED):
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node not in docs:
                if _SQL.search(node.value):
                    bad.append(f"{rel}:{node.lineno}: {node.value.strip()[:70]!r}")
    assert not bad, "SQL outside the catalogue:\n" + "\n".join(bad)


def _docstrings(tree: ast.Module) -> set[ast.Constant]:
    """Docstring nodes: prose that may name VACUUM or a PRAGMA without running it."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(first.value)
    return found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_and_function_sizes(path):
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split the module by job"
    rel = path.relative_to(ROOT).as_posix()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            name = f"{rel}:{node.name}"
            if length > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS:
                pytest.fail(f"{name} is {length} lines: break it into named steps")


#: The worst radon grade a function may have (A: 1-5, B: 6-10, C: 11-20, D: 21-30, ...).
MAX_GRADE = "C"


def test_every_function_is_at_most_grade_c():
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for function in _functions(cc_visit(path.read_text())):
            grade = cc_rank(function.complexity)
            if grade > MAX_GRADE:
                bad.append(
                    f"{rel}:{function.lineno}: {function.fullname} {grade} ({function.complexity})"
                )
    assert not bad, f"functions above grade {MAX_GRADE} (radon cc); simplify by judgment:\n" + (
        "\n".join(bad)
    )


def _functions(blocks):
    """radon's functions and methods (it lists those flat), with their nested functions
    (a function's grade leaves out those of the functions defined in it)."""
    for block in blocks:
        if isinstance(block, Function):
            yield block
            yield from _functions(block.closures)


#: Optional dependencies (the ray, s3 and hf extras): imported inside the functions that
#: need them, with an install hint, never when a module is imported (``framestore.ray``
#: included: importing it works without ray, calling it names the extra).
OPTIONAL = (
    "ray",
    "datasets",
    "pyarrow",
    "fsspec",
    "s3fs",
    "duckdb",
    "pandas",
    "torch",
    "rerun",
    "minari",
)
#: Packages that are the feature of an optional dependency: importing them is asking for
#: it (``framestore.torch`` names the extra when torch is missing, then imports it).
OPTIONAL_HOMES = {"torch": "framestore/torch/"}


def test_optional_dependencies_are_imported_lazily():
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            bad += [
                f"{rel}:{node.lineno}: {n}"
                for n in names
                if n.split(".")[0] in OPTIONAL
                and not rel.startswith(OPTIONAL_HOMES.get(n.split(".")[0], "//"))
            ]
    assert not bad, "import these inside the function that needs them:\n" + "\n".join(bad)


def _documented(start: str, end: str) -> list[str]:
    """The names in the first column of the table between two headings of
    docs/ARCHITECTURE.md."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text[text.index(start) : text.index(end, text.index(start))]
    return re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)


def test_the_users_api_is_listed_in_architecture_md():
    import framestore
    from framestore.store import FrameStore

    listed = _documented("## The user's API", "### FrameStore's members")
    assert listed == framestore.__all__, "list framestore.__all__ in docs/ARCHITECTURE.md"
    for name in framestore.__all__:
        getattr(framestore, name)  # every exported name resolves
    attributes = ["root", "readonly", "location"]  # set in __init__
    members = [n for n in vars(FrameStore) if not n.startswith("_")] + attributes
    documented = _documented("### FrameStore's members", "\n## ")
    assert sorted(documented) == sorted(members), "one line per FrameStore member"


#: ``__init__.py`` files whose docstring may omit the "May import" line, with the reason.
INIT_WITHOUT_IMPORTS_LINE: dict[str, str] = {}


def test_every_framestore_subpackage_says_what_it_owns_and_may_import():
    """Each subpackage's ``__init__.py`` is a docstring naming what it owns and what it may
    import (docs/ARCHITECTURE.md, "framestore's packages"): the folders show the layers."""
    bad = []
    for init in sorted((ROOT / "framestore").rglob("__init__.py")):
        rel = init.relative_to(ROOT).as_posix()
        if rel == "framestore/__init__.py":
            continue  # the user's API
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if not doc or ("May import" not in doc and rel not in INIT_WITHOUT_IMPORTS_LINE):
            bad.append(rel)
    assert not bad, "say what the package owns and what it may import:\n" + "\n".join(bad)
