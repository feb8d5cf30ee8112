"""Training: the environment a policy learns in and the ``tradectl train`` command.

Kept apart from the live strategies because nothing live imports it: the
daemon runs a trained model through ``strategies.recurrent`` and never needs
gymnasium's environment or sb3's training loop. What training shares with
live trading it imports from them (features, cost model, position
accounting, inference), so the two cannot drift apart.

This package's ``__init__`` imports nothing: the CLI imports
``strategies.training.command`` to build its parser, which must stay cheap.
"""
