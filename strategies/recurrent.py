"""The recurrent policy as a daemon strategy: the trained model, run with its memory.

A model gets in only through ``strategies.model_file.load_model``, which
refuses one whose observation size, action map or feature hash differs from
what this strategy computes, or whose zip does not match its recorded
SHA-256; the ``ModelError`` propagates, so the daemon never starts trading
with it. Observations come from the same ``FeatureProcessor`` (same
``FeatureConfig``) ``TradingEnv`` trained the model with, and inference is
``LstmPolicyRunner`` (numpy, equal to sb3 within 1e-5).

Memory
------
One LSTM state per symbol, carried from bar to bar (``StreamStates``). At an
episode start (``reset``: first bar, or after a data gap) the symbol's
feature warm-up restarts and its first observation steps the LSTM with
``episode_start=True``, exactly as an episode begins in training.

Restarts
--------
``export_states`` gives one blob per symbol: the LSTM state plus how many bars
the symbol's episode has run. The features are not saved; they are rebuilt by
replaying history (``resume``). Replaying only the last ``warmup_bars`` bars
would give the same features up to rounding (the rolling statistics
recompute from their windows every time they wrap), but not bit for bit,
because where each window wraps depends on where the episode started. So the
replay starts a multiple of the windows' least common multiple of bars after
the episode's real start: every window then wraps on the same bars as in the
uninterrupted run, and the observation after a restart is identical to the
bit. Bars the daemon missed while it was down are fed through features and
LSTM (as flat: the positions held meanwhile are not known to the strategy).
A state older than ``max_state_age_seconds``, saved for another model, or
unreadable is dropped, and the symbol is re-warmed from recent history
(``warm_up``). ``restore_from_store`` and ``save_to_store`` are the daemon's
two calls at start-up and shutdown.
"""

from __future__ import annotations

import importlib.resources
import itertools
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b as _blake2b
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import structlog

from brokers.base import Bar
from brokers.errors import ModelError
from strategies.base import ACTION_MAP, FLAT, Action, Decision, PositionView
from strategies.features import DEFAULT_FEATURE_CONFIG, FeatureConfig, FeatureProcessor
from strategies.model_file import load_model, read_metadata
from strategies.policy import LstmPolicyRunner, StreamStates

if TYPE_CHECKING:
    from daemon.config import RecurrentConfig, TradectlConfig

log = structlog.get_logger(__name__)

DEFAULT_MODEL = "models/default.zip"
DEFAULT_MAX_STATE_AGE_SECONDS = 7 * 86_400
DEFAULT_MAX_GAP_SECONDS = 259_200
DEFAULT_REWARM_STEPS = 240

_ACTIONS = tuple(Action)
_HALF_PI = math.pi / 2.0
_STATE_MAGIC = b"TRS1"
_STATE_HEADER = struct.Struct("<4sqqB")  # magic, last bar ts, bars in the episode, flags
_FLAG_START_PENDING = 1
_HISTORY_TRIES = 4


def default_model_path() -> Path:
    """The model shipped with the package (``RecurrentConfig.model = None``)."""
    return Path(str(importlib.resources.files("strategies").joinpath(DEFAULT_MODEL)))


def _lcm(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out = math.lcm(out, v)
    return out


def replay_period(config: FeatureConfig) -> int:
    """Bars after which every rolling window of ``config`` wraps in the same phase again."""
    return _lcm((*config.vol_windows, *config.sma_windows, config.rsi_window, config.atr_window, config.regime_window))


@dataclass(frozen=True, slots=True)
class RestorePlan:
    """What one symbol needs from history to be restored.

    ``resume``: the saved LSTM state is used; ``bars`` bars up to and including
    ``last_ts`` rebuild the features, bars after it are caught up. Otherwise the
    symbol is re-warmed from the last ``bars`` bars before ``now``.
    """

    symbol: str
    resume: bool
    bars: int
    last_ts: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Saved:
    last_ts: int
    episode_bars: int
    start_pending: bool
    lstm: bytes


class _HistorySource(Protocol):
    async def historical_bars(self, symbol: str, start_ts: int, end_ts: int) -> list[Bar]: ...


class _BlobStore(Protocol):
    async def load_blobs(self) -> list[tuple[str, str, int, bytes]]: ...

    async def save_blob(self, symbol: str, model_sha256: str, ts: int, state: bytes) -> None: ...


def _feature_config_from(meta: Mapping[str, Any]) -> FeatureConfig:
    """The FeatureConfig a model was trained with; its hash is then checked against the model's record,
    so a model whose features this code computes differently is still refused."""
    raw = meta.get("feature_config")
    if raw is None:
        return DEFAULT_FEATURE_CONFIG
    if not isinstance(raw, dict):
        raise ModelError("model metadata: feature_config is not an object")
    try:
        return FeatureConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model metadata: feature_config not understood by this tradectl ({exc})") from None


class RecurrentStrategy:
    """The trained recurrent policy behind the ``Strategy`` protocol."""

    name = "recurrent"

    def __init__(
        self,
        model_path: str | Path,
        *,
        feature_config: FeatureConfig | None = None,
        max_state_age_seconds: int = DEFAULT_MAX_STATE_AGE_SECONDS,
        max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
        bar_seconds: int = 3600,
        rewarm_steps: int = DEFAULT_REWARM_STEPS,
    ) -> None:
        path = Path(model_path)
        if not path.exists():
            raise ModelError(f"model file {path} does not exist (train one with `tradectl train --out {path}`)")
        config = feature_config if feature_config is not None else _feature_config_from(read_metadata(path))
        self.features = FeatureProcessor(config)
        model, meta = load_model(
            path,
            expected_obs_dim=self.features.n_features,
            expected_action_map=ACTION_MAP,
            expected_feature_hash=self.features.feature_hash,
            expected_features=self.features.describe(),
        )
        self.model_path = path
        self.metadata = meta
        self.model_sha256: str = meta["sha256"]
        self.runner = LstmPolicyRunner(model)
        self.streams = StreamStates(self.runner)
        self.feature_hash = self.features.feature_hash
        self.warmup_bars = self.features.warmup_bars
        self.max_state_age_seconds = max_state_age_seconds
        self.max_gap_seconds = max_gap_seconds
        self.bar_seconds = bar_seconds
        self.rewarm_steps = rewarm_steps
        self.replay_period = replay_period(config)
        self.last_observation: dict[str, np.ndarray] = {}
        self.trace: list[tuple[str, int, np.ndarray, np.ndarray]] | None = None
        """Set to a list to record (symbol, ts, observation, probabilities) of every decision (tests, debugging)."""
        self._last_ts: dict[str, int] = {}
        self._episode_bars: dict[str, int] = {}
        self._starts: set[str] = set()
        self._resumed: set[str] = set()
        self._pending: dict[str, _Saved] = {}
        self._atr_scale = config.atr_scale
        self._atr_index = config.market_names.index(f"atr_{config.atr_window}")
        self._reason = f"policy {self.model_sha256[:16]}"

    @classmethod
    def from_config(cls, rcfg: RecurrentConfig, config: TradectlConfig) -> RecurrentStrategy:
        return cls(
            rcfg.model if rcfg.model is not None else default_model_path(),
            max_state_age_seconds=rcfg.max_state_age_seconds,
            max_gap_seconds=config.guard.max_gap_seconds,
            bar_seconds=config.data.bar_seconds,
        )

    def describe(self) -> dict[str, object]:
        meta = self.metadata
        start = meta.get("train_start") or meta.get("data_start")
        end = meta.get("train_end") or meta.get("data_end")
        return {
            "name": self.name,
            "model": str(self.model_path),
            "model_sha256": self.model_sha256,
            "feature_hash": self.feature_hash,
            "trained_on": f"{start} .. {end}" if start and end else None,
            "lstm_hidden_size": self.runner.hidden_size,
            "warmup_bars": self.warmup_bars,
            "seed": meta.get("seed"),
        }

    # ------------------------------------------------------------------ decisions
    def reset(self, symbol: str) -> None:
        """Episode start. For a symbol restored at start-up the first live bar decides instead:
        a fresh bar guard calls every first bar an episode start, but a bar that continues the
        saved history (no gap) must keep the saved memory."""
        if symbol in self._resumed:
            return
        self._restart(symbol)

    def _restart(self, symbol: str) -> None:
        self.features.reset(symbol)
        self.streams.reset(symbol)
        self._starts.add(symbol)
        self._last_ts.pop(symbol, None)
        self._episode_bars.pop(symbol, None)
        self._resumed.discard(symbol)
        self.last_observation.pop(symbol, None)

    def decide(self, bars: Sequence[Bar], positions: Sequence[PositionView]) -> list[Decision]:
        starts = self._starts
        if len(bars) == 1:  # the usual case, kept lean: it runs on every bar
            bar = bars[0]
            obs = self._observe(bar, positions[0])
            if obs is None:
                return []
            symbol = bar.symbol
            start = symbol in starts
            if start:
                starts.discard(symbol)
            return [self._decision(bar, obs, self.streams.decide_one(symbol, obs, start))]
        ready = []
        for bar, position in zip(bars, positions, strict=True):
            obs = self._observe(bar, position)
            if obs is not None:
                ready.append((bar, obs))
        if not ready:
            return []
        ids = [bar.symbol for bar, _ in ready]
        flags = [symbol in starts for symbol in ids]
        probs = self.streams.decide(ids, np.stack([obs for _, obs in ready]), flags if any(flags) else None)
        starts.difference_update(ids)
        return [self._decision(bar, obs, tuple(p.tolist())) for (bar, obs), p in zip(ready, probs, strict=True)]

    def _observe(self, bar: Bar, position: PositionView) -> np.ndarray | None:
        """Book the bar for its symbol and return its observation (None during warm-up)."""
        symbol = bar.symbol
        if symbol in self._resumed:
            self._continue_or_restart(symbol, bar.ts)
        elif symbol not in self._last_ts:
            self._starts.add(symbol)
        self._last_ts[symbol] = bar.ts
        self._episode_bars[symbol] = self._episode_bars.get(symbol, 0) + 1
        return self.features.update(symbol, bar, position)

    def _continue_or_restart(self, symbol: str, ts: int) -> None:
        self._resumed.discard(symbol)
        last = self._last_ts.get(symbol)
        if last is None or not 0 < ts - last <= self.max_gap_seconds:
            log.info("restored state does not continue into this bar: episode restarts", symbol=symbol, ts=ts)
            self._restart(symbol)

    def _decision(self, bar: Bar, obs: np.ndarray, values: tuple[float, ...]) -> Decision:
        """``values``: the action probabilities as Python floats (float32 values of the runner)."""
        top = max(values)
        symbol = bar.symbol
        self.last_observation[symbol] = obs
        if self.trace is not None:
            self.trace.append((symbol, bar.ts, obs, np.array(values, dtype=self.runner.dtype)))
        regime = self.features.regime(symbol)
        extras = {
            "model_sha256": self.model_sha256,
            "regime_score": regime.score,
            "volatility_z": regime.volatility_z,  # read by the volatility risk layer
            # The ATR feature inverted to price units, for ATR-based sizing.
            "atr": math.tan(obs.item(self._atr_index) * _HALF_PI) * self._atr_scale * bar.close,
            "obs_hash": _blake2b(obs.tobytes(), digest_size=8).hexdigest(),
        }
        return Decision(symbol, bar.ts, _ACTIONS[values.index(top)], top, values, self._reason, extras)

    # ------------------------------------------------------------------ persistence
    def export_states(self) -> dict[str, tuple[int, bytes]]:
        """symbol -> (last bar ts, blob) for ``Store.save_blob``; the blob names the model it belongs to."""
        lstm = self.streams.export()
        out = {}
        for symbol, ts in self._last_ts.items():
            flags = _FLAG_START_PENDING if symbol in self._starts else 0
            header = _STATE_HEADER.pack(_STATE_MAGIC, ts, self._episode_bars.get(symbol, 0), flags)
            out[symbol] = (ts, header + lstm.get(symbol, b""))
        return out

    def restore_states(self, rows: Iterable[tuple[str, str, int, bytes]], now_ts: int) -> list[RestorePlan]:
        """Plan the restore from ``Store.load_blobs()`` rows (symbol, model_sha256, ts, blob).

        Usable states are kept until ``resume`` gets the history the plan asks
        for; everything else is planned as a re-warm.
        """
        plans = []
        for symbol, sha, ts, blob in rows:
            if sha != self.model_sha256:
                plans.append(self.rewarm_plan(symbol, f"state saved for model {sha[:16]}"))
                continue
            age = now_ts - ts
            if age < 0:  # a replay started over, or the clock moved back: the state is not this history's
                plans.append(self.rewarm_plan(symbol, f"state is from {-age} s in the future"))
                continue
            if age > self.max_state_age_seconds:
                plans.append(self.rewarm_plan(symbol, f"state is {age} s old (max {self.max_state_age_seconds})"))
                continue
            try:
                saved = self._decode(symbol, ts, blob)
            except ModelError as exc:
                plans.append(self.rewarm_plan(symbol, str(exc)))
                continue
            self._pending[symbol] = saved
            plans.append(RestorePlan(symbol, True, self._replay_length(saved.episode_bars), ts, "saved state"))
        return plans

    def rewarm_plan(self, symbol: str, reason: str = "no saved state") -> RestorePlan:
        return RestorePlan(symbol, False, self.warmup_bars + self.rewarm_steps, None, reason)

    def _replay_length(self, episode_bars: int) -> int:
        """Fewest bars whose replay leaves every window in the phase of the uninterrupted episode."""
        warm = self.warmup_bars
        if episode_bars <= warm:
            return episode_bars
        return warm + (episode_bars - warm) % self.replay_period

    def _decode(self, symbol: str, ts: int, blob: bytes) -> _Saved:
        if len(blob) < _STATE_HEADER.size:
            raise ModelError(f"saved state for {symbol!r} is truncated ({len(blob)} bytes)")
        magic, last_ts, episode_bars, flags = _STATE_HEADER.unpack_from(blob)
        if magic != _STATE_MAGIC:
            raise ModelError(f"saved state for {symbol!r} is not a recurrent strategy state")
        if last_ts != ts or episode_bars < 0:
            raise ModelError(f"saved state for {symbol!r} is inconsistent (ts {last_ts} vs row {ts})")
        return _Saved(last_ts, episode_bars, bool(flags & _FLAG_START_PENDING), blob[_STATE_HEADER.size :])

    def resume(self, symbol: str, history: Sequence[Bar]) -> str:
        """Restore a planned symbol from ``history`` (its bars up to now, oldest first).

        Returns ``"exact"`` (features rebuilt bit for bit, LSTM state restored),
        ``"approximate"`` (fewer bars than an exact replay needs, but a full
        warm-up: features equal up to rounding), or falls back to ``warm_up``
        (the saved episode has ended in a gap, or history is too short) and
        returns what that returns.
        """
        saved = self._pending.pop(symbol, None)
        if saved is None:
            raise ModelError(f"no restore planned for {symbol!r}: call restore_states first")
        bars = [b for b in history if b.symbol == symbol]
        before = [b for b in bars if b.ts <= saved.last_ts]
        after = [b for b in bars if b.ts > saved.last_ts]
        need = self._replay_length(saved.episode_bars)
        replay = before[-need:] if need > 0 else []
        continuous = bool(replay) and replay[-1].ts == saved.last_ts and not _has_gap(replay, self.max_gap_seconds)
        if after and (after[0].ts - saved.last_ts > self.max_gap_seconds or _has_gap(after, self.max_gap_seconds)):
            continuous = False  # the episode ended while the daemon was down
        if not continuous or len(replay) < min(need, self.warmup_bars):
            return self.warm_up(symbol, bars)
        self._restart(symbol)
        for bar in replay:
            self.features.update_market(symbol, bar)
        if saved.lstm:
            try:
                self.streams.restore({symbol: saved.lstm})
            except ModelError as exc:
                log.warning("saved LSTM state unusable; re-warming", symbol=symbol, error=str(exc))
                return self.warm_up(symbol, bars)
        if saved.start_pending or not saved.lstm:
            self._starts.add(symbol)
        else:
            self._starts.discard(symbol)
        self._last_ts[symbol] = saved.last_ts
        self._episode_bars[symbol] = saved.episode_bars
        self._catch_up(symbol, after)
        self._resumed.add(symbol)
        return "exact" if len(replay) == need else "approximate"

    def warm_up(self, symbol: str, history: Sequence[Bar]) -> str:
        """Start ``symbol`` afresh from recent history: features and LSTM run over the bars after the
        last gap, without deciding. Returns ``"rewarmed"``, or ``"cold"`` when there was no history."""
        bars = [b for b in history if b.symbol == symbol]
        cut = 0
        for i in range(1, len(bars)):
            if not 0 < bars[i].ts - bars[i - 1].ts <= self.max_gap_seconds:
                cut = i
        bars = bars[cut:][-(self.warmup_bars + self.rewarm_steps) :]
        self._pending.pop(symbol, None)
        self._restart(symbol)
        if not bars:
            return "cold"
        self._catch_up(symbol, bars)
        self._resumed.add(symbol)
        return "rewarmed"

    def _catch_up(self, symbol: str, bars: Sequence[Bar]) -> None:
        """Feed bars through features and LSTM without deciding (positions unknown: flat)."""
        features = self.features
        for bar in bars:
            self._last_ts[symbol] = bar.ts
            self._episode_bars[symbol] = self._episode_bars.get(symbol, 0) + 1
            obs = features.update(symbol, bar, FLAT)
            if obs is None:
                continue
            self.streams.decide_one(symbol, obs, symbol in self._starts)
            self._starts.discard(symbol)


def _has_gap(bars: Sequence[Bar], max_gap_seconds: int) -> bool:
    return any(not 0 < b.ts - a.ts <= max_gap_seconds for a, b in itertools.pairwise(bars))


# ---------------------------------------------------------------------- daemon glue
async def restore_from_store(
    strategy: RecurrentStrategy,
    store: _BlobStore,
    broker: _HistorySource,
    now_ts: int,
    symbols: Sequence[str] = (),
) -> dict[str, str]:
    """Start-up: restore saved LSTM states (features rebuilt from ``broker.historical_bars``), re-warm
    stale or foreign ones, and warm ``symbols`` that had nothing saved. Returns symbol -> outcome."""
    plans = strategy.restore_states(await store.load_blobs(), now_ts)
    planned = {p.symbol for p in plans}
    plans += [strategy.rewarm_plan(s) for s in symbols if s not in planned]
    outcome = {}
    for plan in plans:
        anchor = plan.last_ts if plan.last_ts is not None else now_ts
        history = await _history(broker, plan.symbol, anchor, plan.bars, now_ts, strategy.bar_seconds)
        if plan.resume:
            result = strategy.resume(plan.symbol, history)
        else:
            result = strategy.warm_up(plan.symbol, history)
        outcome[plan.symbol] = result
        log.info("recurrent state", symbol=plan.symbol, outcome=result, plan=plan.reason, history_bars=len(history))
    return outcome


async def save_to_store(strategy: RecurrentStrategy, store: _BlobStore) -> int:
    """Shutdown: one blob per symbol, tagged with the model's SHA-256. Returns how many were saved."""
    states = strategy.export_states()
    for symbol, (ts, blob) in states.items():
        await store.save_blob(symbol, strategy.model_sha256, ts, blob)
    return len(states)


async def _history(
    broker: _HistorySource, symbol: str, anchor_ts: int, need: int, end_ts: int, bar_seconds: int
) -> list[Bar]:
    """Bars up to ``end_ts`` with at least ``need`` of them at or before ``anchor_ts`` when the broker has
    that many: the look-back widens until it does (weekends and holidays have no bars)."""
    if need <= 0 and anchor_ts >= end_ts:
        return []
    lookback = need * bar_seconds * 3 // 2 + 7 * 86_400
    bars: list[Bar] = []
    for _ in range(_HISTORY_TRIES):
        bars = await broker.historical_bars(symbol, anchor_ts - lookback, end_ts)
        if sum(1 for b in bars if b.ts <= anchor_ts) >= need:
            break
        lookback *= 2
    unique = {b.ts: b for b in bars if b.symbol == symbol}
    return [unique[ts] for ts in sorted(unique)]
