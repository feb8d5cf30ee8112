"""Risk: what may be traded and how much.

* ``governor``: the trading-state machine and the ordered layer list every order passes;
  ``Verdict``, ``RiskContext``, ``Scope``.
* ``layers``: the layers, one module per family, ``build_layers`` and ``RiskHooks``.
* ``sizing``: the ``Sizer`` protocol and the configured sizer (how large a position a decision aims at).
* ``config``: the ``risk:`` and ``sizing:`` config sections. ``calendar``: exchange sessions and the FX week.
* ``reconciler``: broker versus books at start-up and on a timer.
"""
