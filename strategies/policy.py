"""Pure-numpy inference for a trained sb3-contrib ``RecurrentPPO`` (MlpLstmPolicy).

Live trading calls the policy once per bar per symbol. ``model.predict`` costs
about a millisecond per call, almost all of it torch dispatch and tensor
conversion for matrices far too small to benefit from torch. This module reads
the actor's weights once and replays exactly the computation of
``RecurrentActorCriticPolicy.get_distribution`` in numpy:

    obs -> float32 cast (and /255 for image spaces, as sb3 does)
        -> flatten [-> regime gate over the price features, regime-gated models]
        -> zero state rows where an episode starts
        -> stacked LSTM -> mlp_extractor.policy_net -> action_net -> softmax

The weights are read once by ``strategies.policy_network.read_actor``, which
refuses any network this module would not replay exactly.

``StreamStates`` keeps one LSTM state per stream (symbol) so callers can never
run the policy statelessly by forgetting to pass the state back, and exports
the states as bytes for the store so a restart continues where it stopped.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from brokers.errors import ModelError
from strategies.policy_network import Dense, Gate, LstmLayer, read_actor

if TYPE_CHECKING:
    from sb3_contrib import RecurrentPPO
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

__all__ = ["LstmPolicyRunner", "LstmState", "StreamStates", "greedy"]

LstmState = tuple[np.ndarray, np.ndarray]
"""(h, c), each shaped (n_layers, n_streams, hidden) like sb3's predict state."""


class LstmPolicyRunner:
    """The actor of a RecurrentPPO MlpLstmPolicy as a numpy function.

    Probabilities match ``policy.get_distribution(...).distribution.probs``
    (eval mode) to well within 1e-5; LSTM dropout is an inference no-op and is
    ignored like torch does in eval mode.

    ``dtype`` defaults to float32, the precision the network was trained and
    is run in by sb3: numpy's float64 tanh is not vectorised and costs about
    3x the float32 one, which dominates a single-stream step. float64 is there
    for callers that want the exact-arithmetic reference.

    Not thread-safe: scratch buffers are reused between calls (the daemon
    calls it from its one event loop).
    """

    def __init__(
        self,
        model: RecurrentPPO | RecurrentActorCriticPolicy,
        *,
        dtype: type[np.floating] | np.dtype = np.float32,
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ModelError(f"unsupported inference dtype {self.dtype}: use float32 or float64")
        actor = read_actor(model)
        self.obs_dim, self.hidden_size, self.n_actions = actor.obs_dim, actor.hidden_size, actor.n_actions
        self.n_layers = len(actor.layers)
        self._scale_image = actor.scale_image
        self.fingerprint = actor.fingerprint()
        # Observations can go straight into the float32 input buffer (the copy rounds them).
        self._cast_on_copy = self.dtype == np.dtype(np.float32) and not self._scale_image
        self._layers = [LstmLayer(lay.in_size, lay.weight.astype(self.dtype)) for lay in actor.layers]
        self._head = [Dense(d.weight.astype(self.dtype), d.activation) for d in actor.head]
        g = actor.gate
        self._gate = None if g is None else Gate(g.price, g.regime, Dense(g.dense.weight.astype(self.dtype),
                                                                          g.dense.activation))
        self._plans: dict[int, _StepPlan] = {}  # batch size -> its plan

    def initial_state(self, n_streams: int) -> LstmState:
        shape = (self.n_layers, n_streams, self.hidden_size)
        return np.zeros(shape, dtype=self.dtype), np.zeros(shape, dtype=self.dtype)

    def _prepare_obs(self, obs: np.ndarray) -> np.ndarray:
        # sb3 casts observations to float32 before anything else; do the same so
        # float64 callers see exactly what the trained network saw. With float32
        # buffers a float (n, obs_dim) array needs no copy here: writing it into
        # the input buffer is the same rounding.
        fits = type(obs) is np.ndarray and obs.ndim == 2 and obs.shape[1] == self.obs_dim
        if fits and self._cast_on_copy and obs.dtype.kind == "f":
            return obs
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim != 2:
            x = x.reshape(-1, self.obs_dim) if x.ndim == 1 else x.reshape(x.shape[0], -1)
        if x.shape[1] != self.obs_dim:
            raise ModelError(f"observation size: model {self.obs_dim}, got {x.shape[1]}")
        if self._scale_image:
            x = x / np.float32(255.0)
        return x

    def step(
        self,
        obs: np.ndarray,
        state: LstmState,
        episode_start: np.ndarray | Sequence[bool] | None = None,
        out: LstmState | None = None,
    ) -> tuple[np.ndarray, LstmState]:
        """One recurrent step for n streams at once.

        ``obs`` is (n, obs_dim); ``state`` is (h, c) shaped (n_layers, n, hidden);
        ``episode_start[i]`` zeroes stream i's state before the step, as sb3 does.
        Returns (probabilities (n, n_actions), new state). Inputs are not modified,
        unless ``out`` names them: the new state is written into ``out`` (which may
        be ``state`` itself, updated in place) instead of new arrays.
        """
        x = self._prepare_obs(obs)
        n = x.shape[0]
        h_prev, c_prev = state
        shape = (self.n_layers, n, self.hidden_size)
        if h_prev.shape != shape or c_prev.shape != shape:
            raise ModelError(f"LSTM state shapes {h_prev.shape} and {c_prev.shape}, expected {shape}")
        keep = None
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool)
            if np.count_nonzero(starts):  # a tenth of the cost of .any() on tiny arrays
                keep = (~starts.reshape(-1)).astype(self.dtype)[:, None]
        plan = self._plans.get(n) or self._plan(n)
        plan.load(h_prev, c_prev)
        plan.advance(x, keep)
        if out is None:
            out = np.empty(shape, dtype=self.dtype), np.empty(shape, dtype=self.dtype)
        plan.store(*out)
        return _softmax(plan.logits, plan.pack), out

    def _plan(self, n: int) -> _StepPlan:
        """The batch plan for ``n`` streams, kept for the next step of that size."""
        if len(self._plans) >= 16:
            self._plans.clear()
        plan = self._plans[n] = _StepPlan(self, n)
        return plan

    def stream_step(self) -> _StepPlan | None:
        """A single stream's plan, which keeps that stream's state between steps, or None where only
        ``step`` can run this model (float64 inference, image scaling: observations need preparing)."""
        if not self._cast_on_copy:
            return None
        return _StepPlan(self, None)


_ZERO = 0.0
_PACKS: dict[tuple[str, int], struct.Struct] = {}


def _row_pack(dtype: np.dtype, n: int) -> struct.Struct:
    """Packs n Python floats as ``dtype`` values: a float32 round trip rounds each exactly as an ndarray cast."""
    key = (dtype.char, n)
    pack = _PACKS.get(key)
    if pack is None:
        pack = _PACKS[key] = struct.Struct(f"<{n}{'f' if dtype == np.dtype(np.float32) else 'd'}")
    return pack


class _StepPlan:
    """The one LSTM step, on buffers bound once: a single stream's (1-D) or a batch of ``n`` (2-D).

    A step is a dozen numpy calls on vectors of 4 to 320 elements, where each
    call's dispatch (~0.5 µs) outweighs its arithmetic, so everything that can
    be decided once is decided at construction: every buffer, every view into
    it, the order of the operations. The layout keeps the state where the step
    reads it:

    * h lives in the LSTM input row [x, h, 1], so it needs no copy in, and
      [h, 1] (the end of that row) is the policy head's input as it stands;
    * c lives right after the gates (i, f, o, g), so [i, f] · [g, c] is one
      multiplication and c = f·c + i·g one addition of its halves.

    A single stream's plan (``n`` None) keeps that stream's state in its
    buffers from step to step (``StreamStates``' bound steps). A batch plan is
    a workspace: ``runner.step`` loads the batch's states into it, advances it
    and stores them back. Both run ``advance``, so single-stream and batched
    inference are the same arithmetic; a one-row batch gives a single stream's
    results bit for bit (a one-row matmul is the same BLAS gemv as ``np.dot``
    of a vector).

    Not thread-safe, like the runner.
    """

    __slots__ = ("_dot", "_gate", "_head", "_layers", "_state", "_x", "logits", "obs_shape", "pack")

    def __init__(self, runner: LstmPolicyRunner, n: int | None) -> None:
        dtype = runner.dtype
        hid = runner.hidden_size
        rows = () if n is None else (n,)
        # np.dot has less dispatch than np.matmul, but only matmul writes into a strided view.
        self._dot: Callable[..., Any] = np.dot if n is None else np.matmul
        self.obs_shape = (*rows, runner.obs_dim)
        half = np.full(3 * hid, 0.5, dtype=dtype)  # an array: numpy converts a scalar operand on every call
        layers = []
        for layer in runner._layers:
            row = np.zeros((*rows, layer.in_size + hid + 1), dtype=dtype)  # [x, h, 1]
            row[..., -1] = 1.0
            gc = np.zeros((*rows, 5 * hid), dtype=dtype)  # [i, f, o, g, c]
            prod = np.empty((*rows, 2 * hid), dtype=dtype)  # [i·g, f·c]
            layers.append(
                (
                    row,
                    layer.weight,
                    gc[..., : 4 * hid],  # the gates
                    gc[..., : 3 * hid],  # the sigmoid gates
                    half,
                    gc[..., : 2 * hid],  # [i, f]
                    gc[..., 3 * hid :],  # [g, c]
                    prod,
                    prod[..., :hid],  # i·g
                    prod[..., hid:],  # f·c
                    gc[..., 4 * hid :],  # c
                    row[..., layer.in_size : -1],  # h
                    gc[..., 2 * hid : 3 * hid],  # o
                    row[..., : layer.in_size],  # x: the observation, or the layer below's h
                )
            )
        self._layers = tuple(layers)
        self._state = tuple((layer[11], layer[10]) for layer in layers)  # (h, c) per layer
        self._x = layers[0][-1]
        self._gate = None
        gate = runner._gate
        if gate is not None:  # regime-gated: x[price] *= sigmoid([x[regime], 1] @ W), in the input row itself
            (p0, p1), (r0, r1) = gate.price, gate.regime
            gate_row = np.zeros((*rows, r1 - r0 + 1), dtype=dtype)
            gate_row[..., -1] = 1.0
            gate_out = np.empty((*rows, p1 - p0), dtype=dtype)
            self._gate = (
                self._x[..., r0:r1], gate_row[..., :-1], gate_row, gate.dense.weight, gate_out,
                gate.dense.activation, self._x[..., p0:p1],
            )  # fmt: skip
        head = []
        buf = layers[-1][0][..., runner._layers[-1].in_size :]  # [h, 1]
        for dense in runner._head:
            nxt = np.zeros((*rows, dense.out_size + 1), dtype=dtype)
            nxt[..., -1] = 1.0
            head.append((buf, dense.weight, nxt[..., :-1], dense.activation))
            buf = nxt
        self._head = tuple(head)
        self.logits = head[-1][2]
        self.pack = _row_pack(dtype, runner.n_actions)

    def load(self, h: np.ndarray, c: np.ndarray) -> None:
        """Take the state from ``h`` and ``c``, each (n_layers, [n,] hidden)."""
        for k, (hk, ck) in enumerate(self._state):
            hk[...] = h[k]
            ck[...] = c[k]

    def store(self, h: np.ndarray, c: np.ndarray) -> None:
        """Write the state to ``h`` and ``c``, each (n_layers, [n,] hidden)."""
        for k, (hk, ck) in enumerate(self._state):
            h[k] = hk
            c[k] = ck

    def advance(self, obs: np.ndarray, keep: float | np.ndarray | None = None) -> None:
        """One recurrent step with ``obs`` (already float32 values): the state moves on in place and
        ``logits`` holds the result. ``keep`` multiplies the state first, as sb3 masks episode starts
        (0.0: a single stream's start; a 0/1 column (n, 1): a batch's)."""
        dot, tanh, multiply, add = self._dot, np.tanh, np.multiply, np.add
        self._x[...] = obs
        if self._gate is not None:
            regime, regime_in, gate_row, gate_weight, gate, sigmoid, price = self._gate
            regime_in[...] = regime
            dot(gate_row, gate_weight, gate)
            sigmoid(gate, gate)
            multiply(price, gate, price)
        if keep is not None:
            for h, c in self._state:
                h *= keep
                c *= keep
        below = None
        for row, weight, gates, sig, half, i_f, g_c, prod, ig, fc, c, h, o, x in self._layers:
            if below is not None:
                x[...] = below
            dot(row, weight, gates)
            tanh(gates, gates)
            multiply(sig, half, sig)
            add(sig, half, sig)
            multiply(i_f, g_c, prod)
            add(fc, ig, c)  # c = f·c + i·g
            tanh(c, h)
            multiply(h, o, h)
            below = h
        for buf, weight, out, activation in self._head:
            dot(buf, weight, out)
            if activation is not None:
                activation(out, out)

    def probabilities(self) -> tuple[float, ...]:
        """A single stream's action probabilities after ``advance``, as Python floats (``dtype`` values)."""
        return _softmax_row(self.logits.tolist(), self.pack)


def _softmax_row(logits: list[float], pack: struct.Struct) -> tuple[float, ...]:
    """One row's softmax in Python floats, rounded to the runner's dtype by ``pack``: numpy's
    per-call overhead dwarfs the arithmetic on a handful of actions."""
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    total = sum(e)
    return pack.unpack(pack.pack(*[v / total for v in e]))


def _softmax(logits: np.ndarray, pack: struct.Struct) -> np.ndarray:
    """Row softmax of (n, n_actions) logits into a new array; one row goes through ``_softmax_row``."""
    if logits.shape[0] == 1:
        return np.array([_softmax_row(logits[0].tolist(), pack)], dtype=logits.dtype)
    out = logits - logits.max(axis=1, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


def greedy(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic actions (argmax, as sb3's deterministic predict) and their probabilities."""
    actions = probs.argmax(axis=1)
    return actions, probs[np.arange(probs.shape[0]), actions]


_BLOB_MAGIC = b"TLS1"
_BLOB_HEADER = struct.Struct("<4sII16s")


class StreamStates:
    """One LSTM state per stream id, carried from call to call.

    Streams that decide on the same timestamp are batched into one ``step``.
    States live in two pooled arrays (n_layers, capacity, hidden), except
    while a stream decides alone bar after bar: then its own step plan holds
    its state (it is *live*) and the pool rows are stale until ``_flush``
    writes them back, which everything but the single-stream path does first.
    """

    def __init__(self, runner: LstmPolicyRunner, capacity: int = 8) -> None:
        self.runner = runner
        self._slots: dict[str, int] = {}
        self._batches: dict[tuple[str, ...], slice | np.ndarray] = {}
        # stream id -> its single-stream plan (None: the runner has none)
        self._steps: dict[str, _StepPlan | None] = {}
        self._live: dict[str, _StepPlan] = {}  # the plans that hold their stream's current state
        shape = (runner.n_layers, max(1, capacity), runner.hidden_size)
        self._h = np.zeros(shape, dtype=runner.dtype)
        self._c = np.zeros(shape, dtype=runner.dtype)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def ids(self) -> list[str]:
        return list(self._slots)

    def _slot(self, stream_id: str) -> int:
        slot = self._slots.get(stream_id)
        if slot is None:
            slot = len(self._slots)
            if slot == self._h.shape[1]:
                self._grow()
            self._h[:, slot] = 0.0
            self._c[:, slot] = 0.0
            self._slots[stream_id] = slot
        return slot

    def _grow(self) -> None:
        self._flush()
        pad = np.zeros_like(self._h)
        self._h = np.concatenate([self._h, pad], axis=1)
        self._c = np.concatenate([self._c, pad], axis=1)

    def _flush(self) -> None:
        """Bring the pool up to date: live steps write their states back and stop being live."""
        live = self._live
        if live:
            for stream_id, step in live.items():
                slot = self._slots[stream_id]
                step.store(self._h[:, slot], self._c[:, slot])
            live.clear()

    def _live_step(self, stream_id: str) -> _StepPlan | None:
        """The stream's plan, made live (holding the stream's state); None if there is none."""
        step = self._steps.get(stream_id)
        if step is None and stream_id not in self._steps:
            step = self._steps[stream_id] = self.runner.stream_step()
        if step is not None:
            slot = self._slot(stream_id)
            step.load(self._h[:, slot], self._c[:, slot])
            self._live[stream_id] = step
        return step

    def decide_one(self, stream_id: str, obs: np.ndarray, start: bool = False) -> tuple[float, ...]:
        """One stream's step, the per-bar hot path: ``decide((stream_id,), obs[None, :], (start,))``
        with the probabilities as a tuple of Python floats (the values ``.tolist()`` would give).

        ``obs`` is a float array of ``obs_dim`` values. Results and states are bit for bit those
        of ``decide``; only the overhead around the numpy calls is gone.
        """
        step = self._live.get(stream_id) or self._live_step(stream_id)
        if step is None or obs.shape != step.obs_shape or obs.dtype.kind != "f":
            probs = self.decide((stream_id,), np.asarray(obs)[None, :], (start,) if start else None)
            return tuple(probs[0].tolist())
        step.advance(obs, _ZERO if start else None)
        return _softmax_row(step.logits.tolist(), step.pack)  # step.probabilities(), one call fewer

    def decide(
        self,
        ids: Sequence[str],
        obs_batch: np.ndarray,
        episode_starts: Sequence[bool] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Step the given streams together; returns probabilities (len(ids), n_actions).

        A stream seen for the first time starts from a zero state, which is what
        an episode start means anyway.
        """
        n = len(ids)
        if n == 0:
            return np.empty((0, self.runner.n_actions), dtype=self.runner.dtype)
        obs = np.asarray(obs_batch)
        if obs.shape[0] != n:
            raise ValueError(f"{n} stream ids but {obs.shape[0]} observations")
        if n == 1:
            step = self._single_step(ids[0], obs, episode_starts)
            if step is not None:
                start = episode_starts is not None and bool(np.count_nonzero(episode_starts))
                step.advance(obs, _ZERO if start else None)
                return np.array([step.probabilities()], dtype=self.runner.dtype)
            self._flush()
            slot = self._slot(ids[0])
            sel: slice | np.ndarray = slice(slot, slot + 1)
        else:
            self._flush()
            sel = self._batch_selector(ids)
        if isinstance(sel, slice):
            # A slice is a view of the pool: the runner updates the states in place.
            state = (self._h[:, sel], self._c[:, sel])
            return self.runner.step(obs, state, episode_starts, out=state)[0]
        probs, (h, c) = self.runner.step(obs, (self._h[:, sel], self._c[:, sel]), episode_starts)
        self._h[:, sel] = h
        self._c[:, sel] = c
        return probs

    def _single_step(
        self, stream_id: str, obs: np.ndarray, episode_starts: Sequence[bool] | np.ndarray | None
    ) -> _StepPlan | None:
        """The stream's plan when ``decide`` can use it: one plain (1, obs_dim) float row and at most
        one episode-start flag; anything else goes through ``runner.step`` and its checks."""
        if obs.ndim != 2 or obs.dtype.kind != "f" or (episode_starts is not None and np.size(episode_starts) != 1):
            return None
        step = self._live.get(stream_id) or self._live_step(stream_id)
        if step is None or obs.shape[1:] != step.obs_shape:
            return None
        return step

    def _batch_selector(self, ids: Sequence[str]) -> slice | np.ndarray:
        """Pool index for a batch of ids, cached because the same symbols tend to
        decide together bar after bar. Ids that occupy consecutive slots (the
        usual case: every symbol, in first-seen order) give a slice, so the
        states are read as views rather than gathered."""
        key = tuple(ids)
        sel = self._batches.get(key)
        if sel is None:
            if len(set(key)) != len(key):
                raise ValueError(f"duplicate stream ids in one decision batch: {list(key)}")
            idx = np.fromiter((self._slot(i) for i in key), dtype=np.intp, count=len(key))
            consecutive = bool(np.all(np.diff(idx) == 1))
            sel = slice(int(idx[0]), int(idx[-1]) + 1) if consecutive else idx
            if len(self._batches) >= 64:
                self._batches.clear()
            self._batches[key] = sel
        return sel

    def reset(self, stream_id: str) -> None:
        """Episode start for one stream (first bar, or after a data gap)."""
        self._flush()
        slot = self._slots.get(stream_id)
        if slot is not None:
            self._h[:, slot] = 0.0
            self._c[:, slot] = 0.0

    def state(self, stream_id: str) -> LstmState:
        """Copy of one stream's (h, c), each (n_layers, 1, hidden)."""
        self._flush()
        slot = self._slots[stream_id]
        return self._h[:, slot : slot + 1].copy(), self._c[:, slot : slot + 1].copy()

    def export(self) -> dict[str, bytes]:
        """Every stream's state as a self-describing blob for the store.

        The blob carries the model fingerprint so a state is never restored
        into a different model, where it would be meaningless. Values are
        little-endian float64 whatever the runner's dtype, so the format does
        not depend on it.
        """
        self._flush()
        r = self.runner
        header = _BLOB_HEADER.pack(_BLOB_MAGIC, r.n_layers, r.hidden_size, r.fingerprint.encode("ascii"))
        return {
            sid: header + self._h[:, slot].astype("<f8").tobytes() + self._c[:, slot].astype("<f8").tobytes()
            for sid, slot in self._slots.items()
        }

    def restore(self, blobs: Mapping[str, bytes]) -> None:
        """Load exported states (all or nothing); streams not named are untouched."""
        decoded = {sid: self._decode(sid, blob) for sid, blob in blobs.items()}
        self._flush()
        for sid, (h, c) in decoded.items():
            slot = self._slot(sid)
            self._h[:, slot] = h
            self._c[:, slot] = c

    def _decode(self, stream_id: str, blob: bytes) -> LstmState:
        r = self.runner
        size = r.n_layers * r.hidden_size * 8
        if len(blob) != _BLOB_HEADER.size + 2 * size:
            raise ModelError(
                f"saved LSTM state for {stream_id!r} has {len(blob)} bytes, expected "
                f"{_BLOB_HEADER.size + 2 * size} (n_layers {r.n_layers}, hidden {r.hidden_size})"
            )
        magic, layers, hidden, fingerprint = _BLOB_HEADER.unpack_from(blob)
        if magic != _BLOB_MAGIC:
            raise ModelError(f"saved LSTM state for {stream_id!r} is not an LSTM state blob")
        if (layers, hidden) != (r.n_layers, r.hidden_size):
            raise ModelError(
                f"saved LSTM state for {stream_id!r}: n_layers {layers}, hidden {hidden}; "
                f"model has n_layers {r.n_layers}, hidden {r.hidden_size}"
            )
        if fingerprint.decode("ascii", "replace") != r.fingerprint:
            raise ModelError(
                f"saved LSTM state for {stream_id!r} belongs to another model "
                f"(fingerprint {fingerprint.decode('ascii', 'replace')}, loaded {r.fingerprint}); re-warm it"
            )
        data = np.frombuffer(blob, dtype="<f8", offset=_BLOB_HEADER.size)
        shape = (r.n_layers, r.hidden_size)
        return data[: size // 8].reshape(shape), data[size // 8 :].reshape(shape)
