"""A start that cannot succeed ends at once, non-zero, with one clear line, and leaves nothing open.

A service manager restarts a daemon that exits; it cannot restart one that
hangs. Each failure below is provoked for real against `tradectl run` as a
process: the API port taken, an unwritable store, a refused model file, a
corrupt simulator state file. Also: output into a closed pipe ends quietly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_PROMPT_BACK_SECONDS = 20  # generous on a loaded 2-core machine; a hang is what this catches


def _env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TRADECTL_STORE__PATH=str(tmp_path / "run.db"),
        TRADECTL_API__PORT=str(_free_port()),
        TRADECTL_DATA__PACE="50",
        TRADECTL_STRATEGY__KIND="sma_cross",
    )
    env.update(overrides)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "run"], env=env, capture_output=True, text=True,
            timeout=_PROMPT_BACK_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"tradectl run did not exit within {_PROMPT_BACK_SECONDS}s: {exc.stderr!r}") from None
    return done, time.monotonic() - started


def _assert_clear_failure(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tradectl run: "), done.stderr[-2000:]
    for needle in needles:
        assert needle in last, (needle, last)
    assert "Traceback" not in done.stderr


def test_api_port_taken(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done, _ = _run(_env(tmp_path, TRADECTL_API__PORT=str(port)))
    _assert_clear_failure(done, f"control API cannot listen on 127.0.0.1:{port}", "address already in use")
    # the failed start left a readable store behind, its run closed, nothing traded
    import sqlite3

    with sqlite3.connect(tmp_path / "run.db") as conn:
        (ended,) = conn.execute("SELECT ended_at FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        assert ended is not None
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone() == (0,)


def test_store_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be")
    done, _ = _run(_env(tmp_path, TRADECTL_STORE__PATH=str(blocker / "run.db")))
    _assert_clear_failure(done, str(blocker / "run.db"))


def test_model_refused(tmp_path: Path) -> None:
    corrupt = tmp_path / "model.zip"
    corrupt.write_bytes(b"PK\x03\x04 this is not a model")
    env = _env(tmp_path, TRADECTL_STRATEGY__KIND="recurrent", TRADECTL_STRATEGY__RECURRENT__MODEL=str(corrupt))
    done, _ = _run(env)
    _assert_clear_failure(done, str(corrupt))
    assert not (tmp_path / "run.db").exists(), "a refused model is found before the store is opened"


def test_bad_state_file(tmp_path: Path) -> None:
    state = tmp_path / "sim-state.json"
    state.write_text('{"version": 1, "cash": "not money"')
    done, _ = _run(_env(tmp_path, TRADECTL_BROKER__SIM__STATE_FILE=str(state)))
    _assert_clear_failure(done, str(state))


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte, as with `| head` after its lines
    try:
        done = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "config", "defaults"], stdout=write_end, stderr=subprocess.PIPE,
            text=True, timeout=60, env=_env(tmp_path),
        )
    finally:
        os.close(write_end)
    assert done.stderr == "", done.stderr
    assert done.returncode == 141  # 128 + SIGPIPE: what a shell reports for any tool whose reader left
