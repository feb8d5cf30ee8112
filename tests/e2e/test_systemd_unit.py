"""`systemd-analyze verify` accepts systemd/tradectl.service, with ExecStart pointed at the installed entry point.

verify exits 0 even when it ignores a line it cannot parse (an unknown key, a
bad value), so a line of its output that names the unit counts as a failure
too; a broken copy shows that the check can fail. The unit's User/Group
need not exist here: verify does not resolve them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "tradectl.service"
ENTRY_POINT = Path(sys.executable).parent / "tradectl"

pytestmark = [
    pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                       reason="systemd-analyze is not installed (apt package systemd)"),
    pytest.mark.skipif(not ENTRY_POINT.exists(), reason=f"no installed entry point at {ENTRY_POINT}"),
]


def _installed_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit as it would be installed here: only ExecStart's program changes (to this venv's tradectl)."""
    text = UNIT.read_text() if text is None else text
    text, count = re.subn(r"^ExecStart=\S+", f"ExecStart={ENTRY_POINT}", text, flags=re.MULTILINE)
    assert count == 1
    copy = tmp_path / "tradectl.service"
    copy.write_text(text)
    return copy


def _verify(unit: Path) -> tuple[int, list[str]]:
    """verify's exit code and the lines of its output that are about this unit."""
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=30)
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in lines if unit.name in line]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    code, complaints = _verify(_installed_copy(tmp_path))
    assert code == 0 and complaints == []


def test_the_check_fails_on_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("WatchdogSec=30", "WatchdogSec=thirty\nWatchDogSec=30")
    _code, complaints = _verify(_installed_copy(tmp_path, broken))  # (0: verify only warns)
    assert any("Failed to parse sec value" in line for line in complaints), complaints
    assert any("Unknown key" in line for line in complaints), complaints


def test_the_unit_asks_systemd_for_readiness_and_a_watchdog() -> None:
    """What the daemon's notify code relies on (daemon.sdnotify, daemon.health)."""
    service = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] in ("on-failure", "always"), "a watchdog kill must be followed by a restart"
    assert service["KillSignal"] == "SIGTERM"
