"""The floors, bottom up: vocabulary/ <- activities/ <- workflows/; infra/ beside them; the entry on top.

Read from the code's own imports (every `import` and `from ... import`, at any depth of a module, so a
lazy import inside a function counts too): no arrow may run back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"vocabulary", "activities", "workflows", "infra", "simulator", "cli", "worker", "wiring"}
# What each floor may import of ours (besides itself).
MAY_IMPORT = {
    "vocabulary": set(),
    "activities": {"vocabulary"},
    "workflows": {"vocabulary", "activities"},
    "infra": {"vocabulary", "simulator"},  # the simulator stands in for Fullstory when no key is set
}


def imported_roots(path: Path) -> set[str]:
    return imported_packages(path) & OURS


def imported_packages(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("floor", sorted(MAY_IMPORT))
def test_no_import_runs_back_up(floor):
    for path in sorted((REPO / floor).glob("*.py")):
        wrong = imported_roots(path) - MAY_IMPORT[floor] - {floor}
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}: that is above its floor"


def test_worker_py_is_a_thin_call_of_the_entry():
    assert imported_roots(REPO / "worker.py") == {"cli"}
    assert "worker" not in imported_roots(REPO / "cli.py") | imported_roots(REPO / "wiring.py")


def test_fsspec_is_used_only_by_the_location_module():
    paths = [path for floor in MAY_IMPORT for path in (REPO / floor).glob("*.py")]
    paths += [REPO / "cli.py", REPO / "wiring.py"]
    users = {path.relative_to(REPO).as_posix() for path in paths if "fsspec" in imported_packages(path)}
    assert users <= {"activities/locations.py"}, users
