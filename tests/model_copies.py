"""Second real models for tests, made cheaply and deterministically from the bundled one.

``perturbed_copy`` multiplies every policy parameter by ``1 ± scale`` (the sign of each element drawn
from a seeded generator), so the copy's relative L2 drift from the original is exactly ``scale``. It
is the bundled model with moved weights, not a trained model: used where a test needs a model that
differs by a known amount (drift, promotion, hot switch), never as evidence of trading skill.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from strategies.model_file import meta_path, read_metadata, save_model
from strategies.recurrent import default_model_path

_DERIVED = ("sha256", "model_file", "model_bytes", "created_at")


def plain_copy(target: Path, source: Path | None = None) -> Path:
    """The bundled model (or ``source``) and its metadata copied to ``target``."""
    source = source or default_model_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    shutil.copy(meta_path(source), meta_path(target))
    return target


def perturbed_copy(target: Path, scale: float, *, seed: int = 0, source: Path | None = None) -> Path:
    """A copy of the bundled model whose policy parameters drifted by exactly ``scale`` (relative L2)."""
    import torch
    from sb3_contrib import RecurrentPPO

    source = source or default_model_path()
    model = RecurrentPPO.load(source, device="cpu")
    rng = np.random.default_rng(seed)
    state = model.policy.state_dict()
    with torch.no_grad():
        for value in state.values():
            if value.is_floating_point():
                signs = torch.from_numpy(rng.choice([-1.0, 1.0], size=tuple(value.shape))).to(value.dtype)
                value.mul_(1.0 + scale * signs)
    model.policy.load_state_dict(state)
    meta = {k: v for k, v in read_metadata(source).items() if k not in _DERIVED}
    meta["perturbed"] = {"scale": scale, "seed": seed}
    save_model(model, target, meta)
    return target
