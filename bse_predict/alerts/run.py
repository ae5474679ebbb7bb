"""Start-up checks and the Kafka consumer loop of ``bse-predict alerts``.

A plain aiokafka consumer with manual commits, not a Faust agent: the one
guarantee this service needs is "commit a message's offset only after every
Telegram send it causes was accepted and marked", with messages handled one
at a time in partition order. aiokafka states that directly (auto-commit
off, ``commit({tp: offset + 1})`` after the work). A Faust agent acks on its
own schedule, commits past in-flight events with concurrency > 1
(faust-streaming issue 606) and commits after an exception; nothing here
needs its tables or its windowing. Only ``predictions`` and ``outcomes`` are
read: ``predictions.shadow`` is never subscribed, so shadow output cannot
reach a chat. Each process has a random owner id for its claims and for the
schedule lease, which a background task renews until the process stops. It wires
the explanations (``alerts.explain``) to the worker's window store, read only.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from urllib.parse import urlparse

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError
from redis.asyncio import Redis

from configs.settings import Settings
from bse_predict.candles.schema import Outcome, Prediction
from bse_predict.alerts.chart import summary_chart_png
from bse_predict.alerts.errors import AlertsConfigError
from bse_predict.alerts.explanations import CallExplanations
from bse_predict.alerts.lease import Lease, OwnedKeys
from bse_predict.alerts.service import AlertService
from bse_predict.alerts.store import AlertStore
from bse_predict.alerts.telegram import TelegramClient, redact
from bse_predict.connections.clients import connect_redis, kafka_options
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.explain.explainer import Explainer
from bse_predict.stream.window_store import RedisWindowStore

__all__ = ["run_alerts", "consume", "check_alert_settings", "subscribed_topics"]

log = logging.getLogger(__name__)


def check_alert_settings(settings: Settings) -> tuple[str, tuple[str, ...]]:
    """The token and the chats, or :class:`AlertsConfigError` with a one-line reason."""
    token = settings.telegram_bot_token.get_secret_value().strip() if settings.telegram_bot_token else ""
    if not token:
        raise AlertsConfigError("TELEGRAM_BOT_TOKEN is not set: alerts needs the bot's token in the environment")
    chats = settings.alerts.chat_ids(settings.telegram_chat_id)
    if not chats:
        raise AlertsConfigError("TELEGRAM_CHAT_ID is not set: alerts needs at least one chat id (comma-separated)")
    url = urlparse(settings.telegram_api_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise AlertsConfigError(f"TELEGRAM_API_URL must be an http(s) URL, got {redact(settings.telegram_api_url, token)!r}")
    return token, chats


def subscribed_topics(settings: Settings) -> tuple[str, str]:
    names = TopicNames.of(settings)
    return names.predictions, names.outcomes


class _RedactingFilter(logging.Filter):
    """Defence in depth: whatever a library logs, the token is cut out of the rendered line."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._secret in message:
            record.msg, record.args = redact(message, self._secret), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self._secret)
            record.exc_info = None
        return True


class _Ready(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.announced = False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if not self.announced:
            log.info("alerts ready: %d partitions assigned", len(assigned))
            self.announced = True


async def _caught_up(consumer: AIOKafkaConsumer) -> bool:
    """True when every assigned partition has been read to its end."""
    assignment = list(consumer.assignment())
    if not assignment:
        return False
    ends = await consumer.end_offsets(assignment)
    return all([await consumer.position(tp) >= ends[tp] for tp in assignment])


async def _group_caught_up(consumer: AIOKafkaConsumer, topics: tuple[str, str]) -> bool:
    """True when the group's committed offsets reach the end of every partition of ``topics``: every
    process of the group has handled everything there is, so a digest holds every symbol."""
    partitions = [TopicPartition(topic, p) for topic in topics
                  for p in sorted(consumer.partitions_for_topic(topic) or ())]
    ends = await consumer.end_offsets(partitions)
    for tp in partitions:
        if (await consumer.committed(tp) or 0) < ends[tp]:
            return False
    return True


async def _handle(service: AlertService, names: tuple[str, str], record: ConsumerRecord) -> None:
    predictions, _ = names
    try:
        if record.topic == predictions:
            message: Prediction | Outcome = Prediction.model_validate_json(record.value)
        else:
            message = Outcome.model_validate_json(record.value)
    except ValidationError as exc:
        first = exc.errors()[0]
        log.warning("skipped a malformed message at %s[%d]@%d: %s: %s", record.topic, record.partition,
                    record.offset, ".".join(map(str, first["loc"])) or "message", first["msg"])
        return
    if isinstance(message, Prediction):
        await service.on_prediction(message)
    else:
        await service.on_outcome(message)


async def consume(settings: Settings, service: AlertService, stop: asyncio.Event) -> None:
    """Handle ``predictions`` and ``outcomes`` until ``stop`` is set; commit after each message."""
    names = subscribed_topics(settings)
    consumer = AIOKafkaConsumer(
        **kafka_options(settings),
        group_id=f"{settings.topic_prefix}{settings.alerts.group_id}",
        enable_auto_commit=False,
        auto_offset_reset=settings.alerts.start_from,
        session_timeout_ms=int(settings.alerts.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.alerts.session_timeout_s * 1000 / 3),
    )
    consumer.subscribe(list(names), listener=_Ready())
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=settings.alerts.poll_timeout_ms, max_records=100)
            if not batch:
                if await _caught_up(consumer):
                    await service.on_idle(lambda: _group_caught_up(consumer, names))
                continue
            for tp, records in batch.items():
                for record in records:
                    if stop.is_set():  # SIGTERM: finish the message in hand, leave the rest uncommitted
                        break
                    await _handle(service, names, record)
                    try:
                        await consumer.commit({tp: record.offset + 1})
                    except (CommitFailedError, IllegalStateError) as exc:
                        # The partition moved in a rebalance while this message was handled. Its sends
                        # are marked, so whoever reads it next skips them; the rest of this batch is theirs.
                        log.warning("offset %d of %s not committed (%s); its new owner re-reads it",
                                    record.offset + 1, tp, type(exc).__name__)
                        break
    finally:
        await consumer.stop()


async def _run(settings: Settings, token: str, chats: tuple[str, ...]) -> None:
    await ensure_topics(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client_redis = connect_redis(settings)  # timeouts: a hung Redis is an error
    owner = uuid.uuid4().hex  # this process, in its claims and its lease
    store = AlertStore(client_redis, settings.topic_prefix, settings.alerts.state_ttl_hours, owner,
                       settings.alerts.claim_ttl_s)
    lease = Lease(OwnedKeys(client_redis), store.lease_key, owner, settings.alerts.lease_ttl_s)
    explanations = _explanations(settings, client_redis)
    try:
        async with TelegramClient(settings.telegram_api_url, settings.telegram_bot_token, settings.alerts) as client:
            service = AlertService(settings, store, client, chats, summary_chart_png, lease, explanations=explanations)
            log.info("alerts %s for %d chat(s) from %s; digest %s, summary %s", owner[:8], len(chats),
                     ", ".join(subscribed_topics(settings)), settings.alerts.digest, settings.alerts.summary)
            keeper = asyncio.create_task(lease.keep(stop))
            try:
                await consume(settings, service, stop)
            finally:
                stop.set()
                await keeper
                await lease.release()  # after the last on_idle, which may have renewed it
        log.info("alerts stopped")
    finally:
        if explanations is not None:
            explanations.close()
        await client_redis.aclose()


def _explanations(settings: Settings, client: Redis) -> CallExplanations | None:
    """Explanations from the worker's candle windows (read only) and the versions' native models."""
    if not settings.alerts.explain:
        return None
    windows = RedisWindowStore(client, settings.window.retain_candles, key_prefix=settings.topic_prefix)
    return CallExplanations(windows, Explainer(settings.models_dir, settings.model_signing_secret),
                            settings.alerts.explain_timeout_s)


def run_alerts(settings: Settings, loglevel: str = "info") -> None:
    """Blocks until SIGTERM/SIGINT; raises :class:`AlertsConfigError` before starting on bad settings."""
    token, chats = check_alert_settings(settings)
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactingFilter(token))
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    asyncio.run(_run(settings, token, chats))
