"""Parameter drift between two policies (relative L2), checked against torch's own flattening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brokers.errors import ModelError
from strategies.drift import model_drift, policy_parameters, relative_l2
from strategies.recurrent import default_model_path
from tests.model_copies import perturbed_copy, plain_copy


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_copy(tmp_path_factory.mktemp("drift") / "drifted.zip", 0.2, seed=3)


def test_a_known_perturbation_is_measured_exactly(drifted: Path) -> None:
    assert model_drift(drifted, default_model_path()) == pytest.approx(0.2, rel=1e-6)
    assert model_drift(default_model_path(), default_model_path()) == 0.0


def test_equals_torch_vector_norms(drifted: Path) -> None:
    from sb3_contrib import RecurrentPPO

    a = torch.nn.utils.parameters_to_vector(RecurrentPPO.load(drifted, device="cpu").policy.parameters()).detach()
    b = torch.nn.utils.parameters_to_vector(
        RecurrentPPO.load(default_model_path(), device="cpu").policy.parameters()
    ).detach()
    expected = float(torch.linalg.vector_norm((a - b).double()) / torch.linalg.vector_norm(b.double()))
    assert model_drift(drifted, default_model_path()) == pytest.approx(expected, rel=1e-9)


def test_state_dicts_in_memory_tensors_or_arrays() -> None:
    ref = {"w": torch.tensor([3.0, 4.0]), "steps": torch.tensor([7])}  # integer entries are not parameters
    cand = {"w": np.array([3.0, 4.5]), "steps": np.array([9])}
    assert relative_l2(cand, ref) == pytest.approx(0.5 / 5.0)


def test_different_architectures_and_tampered_files_are_refused(drifted: Path, tmp_path: Path) -> None:
    params = policy_parameters(default_model_path())
    smaller = dict(params, **{"action_net.bias": np.zeros(3)})
    with pytest.raises(ModelError, match=r"action_net.bias is \(3,\) vs \(4,\)"):
        relative_l2(smaller, params)
    with pytest.raises(ModelError, match="only the reference has"):
        relative_l2({k: v for k, v in params.items() if k != "critic.bias"}, params)
    tampered = plain_copy(tmp_path / "t.zip", drifted)
    tampered.write_bytes(tampered.read_bytes()[:-4] + b"oops")
    with pytest.raises(ModelError, match="does not match its metadata"):
        model_drift(tampered, default_model_path())
