"""The tools' SQLite ledger: opened by several worker processes at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentkeel.examples.travel.ledger import Ledger

pytestmark = pytest.mark.unit

_OPEN = """
import sys, time
from agentkeel.examples.travel.ledger import Ledger
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # all open at the same moment
ledger = Ledger(sys.argv[1])
ledger.record(f"key-{sys.argv[2]}", workflow_id="wf", action="book_flight", ref=f"ref-{sys.argv[2]}")
ledger.close()
"""


def test_workers_starting_together_share_a_new_ledger(tmp_path: Path) -> None:
    # Workers that start at the same moment race to switch a new file to WAL and create its
    # schema; each must wait for the others instead of dying with "database is locked".
    repo = Path(__file__).resolve().parents[1]
    for round_ in range(3):
        path = tmp_path / f"ledger-{round_}.db"
        at = time.time() + 1.2
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN, str(path), str(i), str(at)],
                cwd=repo,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(12)
        ]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 12, errors
        ledger = Ledger(path)
        assert len(ledger.entries("wf")) == 12
        ledger.close()
