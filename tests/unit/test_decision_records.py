"""Decision rows: the probabilities column is exactly what ``json.dumps`` writes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from daemon.store.tables import probabilities_json


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=6))
def test_probabilities_are_written_as_json_would(values: list[float]) -> None:
    assert probabilities_json(tuple(values)) == json.dumps(tuple(values))
