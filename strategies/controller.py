"""Dual-lane controller for the hold bonus.

The training reward pays a small bonus for choosing HOLD. Left fixed, that
bonus either does nothing or teaches the policy to sit still forever; the
controller instead steers the bonus so that the policy's observed HOLD rate
tracks the regime's target hold rate.

Sign convention: ``error = target_hold_rate - observed_hold_rate``. A positive
error means the policy holds LESS than the regime wants, so the bonus rises;
a negative error (holding too much) lowers it, down to zero.

Two lanes, because one gain cannot be both responsive and calm:

* fast lane: ``fast_kp · error · market_multiplier`` on every step — reacts
  at once, scaled by how much the current market amplifies mistakes;
* slow lane: ``slow_kp · error`` sampled every ``slow_every`` steps and held
  (sample-and-hold) in between — a steady offset that does not chase noise.

``bonus = base_bonus · (1 + fast + slow)`` clipped to ``[0, 2·base_bonus]`` so
the bonus can never turn into a penalty nor dominate the P&L reward.
"""

from __future__ import annotations


class DualLaneController:
    """Proportional two-lane controller; one ``update`` per environment step."""

    __slots__ = ("base_bonus", "bonus", "fast", "fast_kp", "slow", "slow_every", "slow_kp", "steps")

    def __init__(
        self,
        base_bonus: float,
        fast_kp: float = 0.25,
        slow_kp: float = 0.05,
        slow_every: int = 25,
    ) -> None:
        if base_bonus < 0:
            raise ValueError(f"base_bonus must be >= 0, got {base_bonus}")
        if slow_every < 1:
            raise ValueError(f"slow_every must be >= 1, got {slow_every}")
        self.base_bonus = base_bonus
        self.fast_kp = fast_kp
        self.slow_kp = slow_kp
        self.slow_every = slow_every
        self.reset()

    def reset(self) -> None:
        """Back to the initial state: no lane contribution, bonus = base."""
        self.steps = 0
        self.fast = 0.0
        self.slow = 0.0
        self.bonus = self.base_bonus

    def update(self, error: float, market_multiplier: float = 1.0) -> float:
        """Advance one step with ``error = target - observed`` hold rate; returns the bonus."""
        self.steps += 1
        self.fast = self.fast_kp * error * market_multiplier
        if self.steps % self.slow_every == 0:
            self.slow = self.slow_kp * error
        base = self.base_bonus
        bonus = base * (1.0 + self.fast + self.slow)
        hi = 2.0 * base
        self.bonus = 0.0 if bonus < 0.0 else (hi if bonus > hi else bonus)
        return self.bonus
