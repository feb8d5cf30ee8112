"""A trained sb3-contrib ``RecurrentPPO`` actor (MlpLstmPolicy) read into numpy arrays, once.

``read_actor`` is the only place that looks inside torch: it checks that the
network is one ``strategies.policy.LstmPolicyRunner`` replays exactly (Box
observations, Discrete actions, FlattenExtractor, a plain ``nn.LSTM``, Linear
layers with supported activations) and refuses anything else with a
``ModelError`` naming what it found, rather than running something subtly
different. The weights come out in float64, laid out for the runner's step
(see ``LstmLayer`` and ``Dense``).

A regime-gated model (``strategies.regime_gate.RegimeGatedExtractor``) has one
thing more before the LSTM: its gate, read as a ``Gate`` (a sigmoid Dense from
the regime slice of the observation, multiplying the price slice). Any other
features extractor is refused.

Only the actor path is read: the critic (separate LSTM, shared LSTM or plain
Linear) never influences the action distribution, so all three critic options
are supported without reading the critic at all.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from brokers.errors import ModelError

if TYPE_CHECKING:
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

__all__ = ["Activation", "Actor", "Dense", "Gate", "LstmLayer", "read_actor"]

Activation = Callable[[np.ndarray, np.ndarray], object]
"""An activation applied in place as ``f(x, x)`` (a ufunc's ``(x, out)``); the identity is None."""


def _relu(x: np.ndarray, out: np.ndarray) -> None:
    np.maximum(x, 0.0, out=out)


def _sigmoid(x: np.ndarray, out: np.ndarray) -> None:
    # 0.5·(1 + tanh(x/2)) is the logistic function without exp overflow warnings.
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5


def _leaky_relu(slope: float) -> Activation:
    def apply(x: np.ndarray, out: np.ndarray) -> None:
        np.copyto(out, np.where(x >= 0.0, x, x * slope))

    return apply


def _elu(alpha: float) -> Activation:
    def apply(x: np.ndarray, out: np.ndarray) -> None:
        np.copyto(out, np.where(x > 0.0, x, alpha * np.expm1(np.minimum(x, 0.0))))

    return apply


def _silu(x: np.ndarray, out: np.ndarray) -> None:
    s = np.empty_like(x)
    _sigmoid(x, s)
    np.multiply(x, s, out=out)


def _activation_for(module: Any) -> Activation | None:
    """Map a torch activation module to an in-place numpy function (None: identity), or refuse.

    Tanh is the ufunc itself: a Python wrapper around it is measurable at the
    size of a single-stream step.
    """
    from torch import nn

    if isinstance(module, nn.Tanh):
        return np.tanh
    if isinstance(module, nn.ReLU):
        return _relu
    if isinstance(module, nn.Sigmoid):
        return _sigmoid
    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.LeakyReLU):
        return _leaky_relu(float(module.negative_slope))
    if isinstance(module, nn.ELU):
        return _elu(float(module.alpha))
    if isinstance(module, nn.SiLU):
        return _silu
    raise ModelError(
        f"unsupported activation {type(module).__name__} in the policy network "
        "(supported: Tanh, ReLU, LeakyReLU, ELU, SiLU, Sigmoid, Identity)"
    )


def _f64(t: Any) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy()


@dataclass(frozen=True, slots=True)
class LstmLayer:
    """One LSTM layer with its gate matmuls fused into a single matrix.

    Rows are [input; h; 1] so one matmul gives all four gate pre-activations,
    bias included. Columns are reordered to (i, f, o, g) and the sigmoid gates
    pre-scaled by 0.5, so a single tanh over all 4H columns followed by
    ``0.5·t + 0.5`` on the first 3H gives sigmoid(i, f, o) and tanh(g).
    """

    in_size: int
    weight: np.ndarray  # (in_size + hidden + 1, 4 * hidden)


@dataclass(frozen=True, slots=True)
class Dense:
    """A Linear layer as rows [W^T; bias], fed an input that ends in a 1 column."""

    weight: np.ndarray  # (in + 1, out)
    activation: Activation | None  # None: the identity

    @property
    def out_size(self) -> int:
        return int(self.weight.shape[1])


@dataclass(frozen=True, slots=True)
class Gate:
    """The regime gate: ``obs[price] *= sigmoid([obs[regime], 1] @ dense.weight)``, before the LSTM."""

    price: tuple[int, int]  # start, stop in the observation
    regime: tuple[int, int]
    dense: Dense  # (n_regime + 1, n_price), sigmoid activation


def _fuse_lstm_layer(w_ih: np.ndarray, w_hh: np.ndarray, bias: np.ndarray, hidden: int) -> LstmLayer:
    h = hidden
    # torch gate order is (i, f, g, o); we want (i, f, o, g).
    order = np.concatenate([np.arange(0, 2 * h), np.arange(3 * h, 4 * h), np.arange(2 * h, 3 * h)])
    stacked = np.concatenate([w_ih.T, w_hh.T, bias[None, :]], axis=0)[:, order]
    stacked[:, : 3 * h] *= 0.5
    return LstmLayer(in_size=w_ih.shape[1], weight=np.ascontiguousarray(stacked))


def _dense_from_linear(module: Any, activation: Activation | None) -> Dense:
    bias = np.zeros(module.out_features) if module.bias is None else _f64(module.bias)
    return Dense(np.ascontiguousarray(np.concatenate([_f64(module.weight).T, bias[None, :]])), activation)


def _policy_of(model: Any) -> RecurrentActorCriticPolicy:
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    policy = getattr(model, "policy", model)
    if not isinstance(policy, RecurrentActorCriticPolicy):
        raise ModelError(f"expected a RecurrentPPO model or RecurrentActorCriticPolicy, got {type(model).__name__}")
    return policy


def _check_spaces(policy: RecurrentActorCriticPolicy) -> tuple[int, bool, Gate | None]:
    """Return (flat observation size, divide-by-255, the regime gate if any) or refuse unsupported spaces."""
    from gymnasium import spaces
    from stable_baselines3.common.preprocessing import is_image_space
    from stable_baselines3.common.torch_layers import FlattenExtractor

    if not isinstance(policy.action_space, spaces.Discrete):
        raise ModelError(
            f"unsupported action space {policy.action_space}: only Discrete actions "
            "(a categorical distribution) can be run"
        )
    if int(policy.action_space.start) != 0:
        raise ModelError(f"unsupported Discrete action space starting at {policy.action_space.start}")
    obs_space = policy.observation_space
    if not isinstance(obs_space, spaces.Box):
        raise ModelError(f"unsupported observation space {obs_space}: only Box observations are supported")
    extractor = policy.pi_features_extractor
    gate = None
    if not isinstance(extractor, FlattenExtractor):
        gate = _read_gate(extractor)
    scale_image = bool(policy.normalize_images) and is_image_space(obs_space)
    return int(np.prod(obs_space.shape)), scale_image, gate


def _read_gate(extractor: Any) -> Gate:
    """The regime gate of a ``RegimeGatedExtractor``; any other extractor is refused."""
    if type(extractor).__name__ != "RegimeGatedExtractor":  # checked by name first: no torch import to refuse
        raise ModelError(
            f"unsupported features extractor {type(extractor).__name__}: "
            "only FlattenExtractor (MlpLstmPolicy) and RegimeGatedExtractor (regime-gated) are supported"
        )
    from strategies.regime_gate import RegimeGatedExtractor

    if not isinstance(extractor, RegimeGatedExtractor):
        raise ModelError(f"features extractor {type(extractor).__module__}.RegimeGatedExtractor is not tradectl's")
    (p0, p1), (r0, r1) = extractor.price, extractor.regime
    dense = _dense_from_linear(extractor.gate, _sigmoid)
    if dense.weight.shape != (r1 - r0 + 1, p1 - p0):
        raise ModelError(f"regime gate weights {dense.weight.shape} do not fit price {extractor.price}, "
                         f"regime {extractor.regime}")
    return Gate((p0, p1), (r0, r1), dense)


def _read_lstm(policy: RecurrentActorCriticPolicy) -> tuple[list[LstmLayer], int]:
    from torch import nn

    lstm = policy.lstm_actor
    if type(lstm) is not nn.LSTM:
        raise ModelError(f"unsupported recurrent layer {type(lstm).__name__}: only torch.nn.LSTM")
    if lstm.bidirectional or lstm.proj_size or lstm.batch_first:
        raise ModelError(
            "unsupported LSTM options: bidirectional, proj_size and batch_first must be unset "
            f"(got bidirectional={lstm.bidirectional}, proj_size={lstm.proj_size}, "
            f"batch_first={lstm.batch_first})"
        )
    hidden = int(lstm.hidden_size)
    layers = []
    for k in range(lstm.num_layers):
        w_ih = _f64(getattr(lstm, f"weight_ih_l{k}"))
        w_hh = _f64(getattr(lstm, f"weight_hh_l{k}"))
        bias = np.zeros(4 * hidden)
        if lstm.bias:
            bias = _f64(getattr(lstm, f"bias_ih_l{k}")) + _f64(getattr(lstm, f"bias_hh_l{k}"))
        layers.append(_fuse_lstm_layer(w_ih, w_hh, bias, hidden))
    return layers, hidden


def _read_head(policy: RecurrentActorCriticPolicy) -> list[Dense]:
    """policy_net (Linear/activation pairs) followed by action_net, as dense layers."""
    from torch import nn

    linears: list[Any] = []
    activations: list[Activation | None] = []
    for module in policy.mlp_extractor.policy_net:
        if isinstance(module, nn.Linear):
            linears.append(module)
            activations.append(None)
        elif linears and activations[-1] is None:
            # An activation applies to the Linear just before it.
            activations[-1] = _activation_for(module)
        else:
            raise ModelError(f"unsupported policy network: {type(module).__name__} not directly after a Linear layer")
    action_net = policy.action_net
    if not isinstance(action_net, nn.Linear):
        raise ModelError(f"unsupported action_net {type(action_net).__name__}: expected Linear")
    dense = [_dense_from_linear(m, act) for m, act in zip(linears, activations, strict=True)]
    dense.append(_dense_from_linear(action_net, None))
    return dense


@dataclass(frozen=True, slots=True)
class Actor:
    """What the runner needs of a policy: its sizes and its layers (float64 weights)."""

    obs_dim: int
    scale_image: bool  # observations are divided by 255 first, as sb3 does for image spaces
    hidden_size: int
    n_actions: int
    layers: tuple[LstmLayer, ...]
    head: tuple[Dense, ...]  # policy_net's layers, then action_net
    gate: Gate | None = None  # the regime gate before the LSTM (regime-gated models)

    def fingerprint(self) -> str:
        """Identify the weights (in float64, whatever the runner's dtype) so a saved LSTM
        state is never fed to another model."""
        digest = hashlib.sha256()
        dims = (self.obs_dim, self.hidden_size, len(self.layers), self.n_actions, int(self.scale_image))
        digest.update(struct.pack("<5q", *dims))
        for layer in self.layers:
            digest.update(layer.weight.tobytes())
        for dense in self.head:
            digest.update(dense.weight.tobytes())
        if self.gate is not None:  # plain models keep the fingerprint they always had
            digest.update(struct.pack("<4q", *self.gate.price, *self.gate.regime))
            digest.update(self.gate.dense.weight.tobytes())
        return digest.hexdigest()[:16]


def read_actor(model: Any) -> Actor:
    """The actor of a RecurrentPPO model (or a RecurrentActorCriticPolicy), or a ModelError."""
    policy = _policy_of(model)
    obs_dim, scale_image, gate = _check_spaces(policy)
    layers, hidden = _read_lstm(policy)
    if layers[0].in_size != obs_dim:
        raise ModelError(f"LSTM input size {layers[0].in_size} differs from observation size {obs_dim}")
    head = _read_head(policy)
    n_actions = int(policy.action_space.n)
    if head[-1].out_size != n_actions:
        raise ModelError(f"action_net has {head[-1].out_size} outputs for {n_actions} actions")
    return Actor(obs_dim, scale_image, hidden, n_actions, tuple(layers), tuple(head), gate)
