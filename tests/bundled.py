"""The bundled real bars as a small CSV file, for tests that run a command on a data file."""

from __future__ import annotations

from pathlib import Path

from brokers.history import bundled_dataset_path


def bundled_slice(path: Path, bars: int) -> Path:
    """Write the header and the first ``bars`` rows of the bundled dataset, byte for byte, to ``path``."""
    lines = bundled_dataset_path().read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: bars + 1]))
    return path
