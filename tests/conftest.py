"""Test-wide settings.

Under CI, hypothesis runs derandomized so that a submission's result does not
depend on which random examples one run happened to draw; locally it keeps
exploring new examples (and its database remembers failures).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
