"""The Makefile's own words: ``make clean`` says what it leaves behind, and why."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_make_clean_says_it_leaves_the_nodes_identity(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # In a scratch directory: the real clean would remove this checkout's virtualenv.
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "var").mkdir()
    done = subprocess.run(
        ["make", "clean"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "BURROW_NODE_STATE_DIR": "/srv/node-id"},
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "var").exists()
    said = [line for line in done.stdout.splitlines() if line.startswith("make clean leaves")]
    assert len(said) == 1, done.stdout
    assert "/srv/node-id" in said[0]
    assert "keeps their configurations working" in said[0]
