"""``bse-predict alerts``: predictions and outcomes from Kafka to Telegram, exactly once per chat.

- :mod:`bse_predict.alerts.telegram`: the Bot API client (pacing, retries, token redaction);
- :mod:`bse_predict.alerts.store`: Redis state (verdicts, claims and sent marks, catch-up notes, outcomes,
  digest periods);
- :mod:`bse_predict.alerts.lease`: keys owned by a process's token: the schedule lease, claim renewal;
- :mod:`bse_predict.alerts.service`: what each message leads to (no Kafka in it);
- :mod:`bse_predict.alerts.chart`: the daily summary's PNG (matplotlib, optional);
- :mod:`bse_predict.alerts.run`: the Kafka consumer loop and start-up checks.

docs/alerts.md is the reader's guide.
"""
