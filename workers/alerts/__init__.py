"""``bse-predict alerts``: predictions and outcomes from Kafka to Telegram, exactly once per chat.

- :mod:`workers.alerts.telegram`: the Bot API client (pacing, retries, token redaction);
- :mod:`workers.alerts.store`: Redis state (verdicts, claims and sent marks, catch-up notes, outcomes,
  digest periods);
- :mod:`workers.alerts.lease`: keys owned by a process's token: the schedule lease, claim renewal;
- :mod:`workers.alerts.service`: what each message leads to (no Kafka in it);
- :mod:`workers.alerts.chart`: the daily summary's PNG (matplotlib, optional);
- :mod:`workers.alerts.run`: the Kafka consumer loop and start-up checks.

docs/alerts.md is the reader's guide.
"""
