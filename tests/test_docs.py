"""The documentation site builds with ``mkdocs build --strict`` and its nav lists every page."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    if isinstance(node, list):
        return [p for v in node for p in _nav_pages(v)]
    return []


def _config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_nav_lists_every_page():
    nav = set(_nav_pages(_config()["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not pages - nav, f"pages missing from the nav of mkdocs.yml: {sorted(pages - nav)}"


def test_docs_name_existing_examples():
    """Every example script the docs point to exists (tests/test_examples.py runs them all)."""
    for page in [*DOCS.rglob("*.md"), ROOT / "README.md"]:
        for name in re.findall(r"examples/([\w-]+\.py)", page.read_text()):
            assert (ROOT / "examples" / name).is_file(), f"{page.name}: examples/{name} does not exist"


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed (pip install -c constraints.txt -e '.[test]')",
)
def test_mkdocs_build_strict(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
