"""``bse-predict dashboard``: read-only web pages over what any consumer can read (docs/dashboard.md).

:mod:`~bse_predict.dashboard.board` is the bounded in-memory model (core), :mod:`~bse_predict.dashboard.track_record`
its scores per period (:mod:`~bse_predict.dashboard.periods`), :mod:`~bse_predict.dashboard.equity` the equity of its
live signals, :mod:`~bse_predict.dashboard.charts` the track record's SVG charts and
:mod:`~bse_predict.dashboard.track_record_view` what that page shows (all core), :mod:`~bse_predict.dashboard.feed` fills it from the topics, :mod:`~bse_predict.dashboard.web`
serves the pages, :mod:`~bse_predict.dashboard.explanations` explains a call when it is opened,
:mod:`~bse_predict.dashboard.access` checks the token, :mod:`~bse_predict.dashboard.errors` says what a page
could not read, :mod:`~bse_predict.dashboard.operations` gathers the operations page's breakers
(:mod:`~bse_predict.dashboard.breakers`, core), consumer lag (:mod:`~bse_predict.dashboard.consumer_lag`) and
drift per feature family (:mod:`~bse_predict.dashboard.drift_groups`, core), :mod:`~bse_predict.dashboard.run`
wires them (and the Redis reads).
"""
