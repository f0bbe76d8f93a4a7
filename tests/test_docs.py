"""The docs name the tests that show each guarantee; a renamed or deleted test must not leave the docs
pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "charts/kubeforge/README.md"])
TEST_SOURCES = [*ROOT.glob("tests/*.py"), *ROOT.glob("e2e/*.py")]
_NAME = re.compile(r"\btest_[a-z0-9_]+\b")


def _defined() -> set[str]:
    names: set[str] = set()
    for source in TEST_SOURCES:
        names.add(source.stem)
        names.update(re.findall(r"^(?:async )?def (test_[a-z0-9_]+)", source.read_text(), re.MULTILINE))
    return names


DEFINED = _defined()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_test_a_doc_names_exists(doc: Path) -> None:
    missing = sorted({name for name in _NAME.findall(doc.read_text()) if name not in DEFINED})
    assert not missing, f"{doc.relative_to(ROOT)} names tests that do not exist: {missing}"
