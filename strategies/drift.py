"""Parameter drift: how far one policy's weights moved from another's, as one number.

The number is the relative L2 distance ``||θ_candidate - θ_reference|| / ||θ_reference||`` over every
floating-point tensor of the policy (actor, critic, LSTM; not the optimiser's state), taken as one
flat vector. Why this measure: a retrained or cycled model whose weights moved by more than a few
tens of percent is, for practical purposes, a different model; its gates on older data say little
about it, so a large drift is worth an alert and, with a failed gate, a rollback. A relative figure
is independent of the network's size, so one limit (default 15%) serves every model.

Two ways in: ``model_drift`` compares two model files (what promotion and the daemon do; each file's
SHA-256 is checked against its metadata before anything in it is unpickled) and ``relative_l2``
compares two state dicts already in memory (what cyclic training can call between cycles with
``model.policy.state_dict()``). Tensors or arrays both work.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from brokers.errors import ModelError
from strategies.model_file import read_verified

__all__ = ["DEFAULT_DRIFT_LIMIT", "model_drift", "policy_parameters", "relative_l2"]

DEFAULT_DRIFT_LIMIT = 0.15
_POLICY_ENTRY = "policy.pth"  # what RecurrentPPO.save writes the policy's state dict to


def _is_float(value: Any) -> bool:
    """Floating-point entries are parameters; integer ones (counters, buffers) are not."""
    if hasattr(value, "is_floating_point"):
        return bool(value.is_floating_point())
    return bool(np.issubdtype(np.asarray(value).dtype, np.floating))


def _as_array(value: Any) -> np.ndarray:
    """A torch tensor or anything numpy reads, as float64 (a tensor is detached and copied to the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def relative_l2(candidate: Mapping[str, Any], reference: Mapping[str, Any]) -> float:
    """``||candidate - reference||₂ / ||reference||₂`` over the floating-point entries of two state dicts.

    Both must hold the same floating-point entries with the same shapes (the same architecture);
    anything else is a ``ModelError`` naming the first difference, because a distance between
    different networks means nothing.
    """
    keys = sorted(k for k, v in reference.items() if _is_float(v))
    theirs = sorted(k for k, v in candidate.items() if _is_float(v))
    if keys != theirs:
        only_c = sorted(set(theirs) - set(keys))
        only_r = sorted(set(keys) - set(theirs))
        raise ModelError(
            f"policies differ in architecture: only the candidate has {only_c}, only the reference has {only_r}"
        )
    diff = norm = 0.0
    for key in keys:
        a, b = _as_array(candidate[key]), _as_array(reference[key])
        if a.shape != b.shape:
            raise ModelError(f"policies differ in architecture: {key} is {a.shape} vs {b.shape}")
        diff += float(np.sum((a - b) ** 2))
        norm += float(np.sum(b**2))
    if norm == 0.0:
        raise ModelError("the reference policy's parameters are all zero: relative drift is undefined")
    return math.sqrt(diff) / math.sqrt(norm)


def policy_parameters(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The policy's state dict of a model file (verified against its SHA-256), as numpy arrays."""
    import torch

    data, _meta = read_verified(path)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            raw = archive.read(_POLICY_ENTRY)
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (KeyError, zipfile.BadZipFile, RuntimeError, OSError, ValueError) as exc:
        raise ModelError(f"model file {path}: policy parameters unreadable ({type(exc).__name__}: {exc})") from None
    return {str(k): _as_array(v) for k, v in state.items()}


def model_drift(candidate: str | os.PathLike[str], reference: str | os.PathLike[str]) -> float:
    """Relative L2 drift of ``candidate``'s policy parameters from ``reference``'s (two model files).

    Reads and unpickles files: call it off the event loop (``asyncio.to_thread``).
    """
    return relative_l2(policy_parameters(candidate), policy_parameters(reference))
