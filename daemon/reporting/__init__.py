"""`tradectl report`: runs and weeks as self-contained HTML pages people look at.

* ``data`` — what a report shows, read from the store (and the run's bars);
* ``sections`` — tables and charts of it, through ``strategies.evaluation``;
* ``charts`` — matplotlib PNGs on an Agg canvas, drawn off the event loop;
* ``page`` — the one HTML file, images embedded;
* ``weekly`` — the one-pager over the live store's last week;
* ``command`` — the CLI subcommand.

This ``__init__`` imports nothing, so building the CLI's parser stays cheap.
"""
