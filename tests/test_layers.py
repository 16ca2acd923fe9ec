"""The layering holds: import-linter's contracts (pyproject.toml) and what they cannot see.

import-linter checks imports between packages. Two rules of the window are about names inside
modules, so they are checked here on the syntax tree: the window never builds SQL (no
``sqlalchemy.text``) and never opens a connection (no ``<...>.engine.connect()``/``.begin()``).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "qsnap_gui" / "ui"
LINT_IMPORTS = [
    sys.executable,
    "-c",
    "from importlinter.cli import lint_imports_command; lint_imports_command()",
]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LINT_IMPORTS, "--no-cache"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_are_kept():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_a_broken_contract_fails(tmp_path):
    """The contracts can fail: the engine importing Qt breaks one."""
    shutil.copytree(
        ROOT / "qsnap_gui", tmp_path / "qsnap_gui", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "qsnap_gui" / "engine" / "bad.py").write_text("import PySide6\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert "only the window imports Qt BROKEN" in run.stdout
    assert "qsnap_gui.engine.bad -> PySide6" in run.stdout


def ui_modules() -> list[Path]:
    return sorted(UI.rglob("*.py"))


def sql_text_imports(tree: ast.AST) -> list[int]:
    """Lines that take ``text`` from SQLAlchemy (``from sqlalchemy import text``, ``sa.text``)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            lines += [node.lineno for alias in node.names if alias.name == "text"]
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "text"
            and isinstance(node.value, ast.Name)
            and node.value.id in ("sqlalchemy", "sa")
        ):
            lines.append(node.lineno)
    return lines


def connection_opens(tree: ast.AST) -> list[int]:
    """Lines that call ``<anything>.engine.connect()`` or ``.begin()``, or ``engine.connect()``."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("connect", "begin", "raw_connection"):
            continue
        owner = node.func.value
        name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if name == "engine":
            lines.append(node.lineno)
    return lines


def offenders(check) -> list[str]:
    found = []
    for path in ui_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{path.relative_to(ROOT)}:{line}" for line in check(tree)]
    return found


def test_the_window_builds_no_sql():
    assert offenders(sql_text_imports) == []


def test_the_window_opens_no_connection():
    assert offenders(connection_opens) == []


def test_the_checks_see_what_they_look_for():
    bad = ast.parse(
        "from sqlalchemy import text\n"
        "import sqlalchemy as sa\n"
        "q = sa.text('select 1')\n"
        "with database.engine.connect() as conn: pass\n"
        "with engine.begin() as conn: pass\n"
        "button.clicked.connect(slot)\n"
    )
    assert sql_text_imports(bad) == [1, 3]
    assert connection_opens(bad) == [4, 5]


def test_the_relied_on_columns_are_the_models_columns_not_marked_extra():
    """``store.columns`` (read at connect without the ORM) and the models agree."""
    from qsnap_gui.store.columns import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
    from qsnap_gui.store.tables import Base

    relied = {
        table.name: tuple(c.name for c in table.columns if not c.info.get("extra"))
        for table in Base.metadata.sorted_tables
    }
    assert relied == {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
    assert {t.name for t in Base.metadata.sorted_tables if t.info.get("optional")} == set(
        OPTIONAL_COLUMNS
    )


# a command's process loads what it runs: the parser alone needs no database library, and a
# dry-run backfill neither the ORM nor the other commands (half a second of every start)
IMPORTS_OF_A_COMMAND = """
import json, os, sys
from qsnap_gui.cli.main import build_parser, main
build_parser().parse_args(["backfill", "--dry-run"])
before = "sqlalchemy" in sys.modules
code = main(["backfill", "--dry-run", "--json"])
heavy = ("sqlalchemy.orm", "qsnap_gui.store.tables", "qsnap_gui.engine.flows",
         "qsnap_gui.cli.populate", "qsnap_gui.cli.oban")
print(json.dumps({"code": code, "parser_loads_sqlalchemy": before,
                  "loaded": [m for m in heavy if m in sys.modules]}))
"""


def test_a_command_imports_only_what_it_runs(db_url):
    run = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF_A_COMMAND],
        env={**os.environ, "QSNAP_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "parser_loads_sqlalchemy": False, "loaded": []}


# the embedded server's own command opens no database: it needs no database library at all
IMPORTS_OF_SERVER_PATH = """
import json, sys
from qsnap_gui.cli.main import main
code = main(["server", "path"])
print(json.dumps({"code": code, "sqlalchemy": "sqlalchemy" in sys.modules,
                  "psycopg": "psycopg" in sys.modules}))
"""


def test_the_server_command_starts_without_a_database_library(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF_SERVER_PATH],
        env={**os.environ, "QSNAP_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "sqlalchemy": False, "psycopg": False}
