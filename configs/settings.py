"""The one settings object of bse-predict.

Layering, lowest to highest priority: ``configs/default.yaml``, the file given
with ``--config`` (deep-merged), then environment variables (``BSE_*`` and the
``TELEGRAM_*`` names of the contract). Build it once at start-up with
:func:`load_settings` and pass it down; nothing reads the environment later.

**One source of defaults.** ``configs/default.yaml`` is it: :class:`Settings`
reads the file as its lowest layer (:class:`_ShippedDefaults`), so ``Settings()``
and ``load_settings()`` are the same object, and the model zoo (``models``) has
no default in Python at all. The blocks keep Python field defaults so that one
can be built on its own (``BreakerConfig(open_s=1)``), and a unit test proves
each block built with no arguments equals the file's, so the two cannot drift.

**Environment.** The contract's flat names (``BSE_KAFKA_BOOTSTRAP``,
``BSE_REDIS_URL``, ``BSE_KAFKA_SASL_PASSWORD``, ...) and any nested value with a
double underscore: ``BSE_WORKER__BATCH_MAX_EVENTS=7`` sets
``worker.batch_max_events``. A value in a free-form mapping (a family's
``params``) arrives as the string the environment holds.

**Checked at load**, beside each field's own bounds: a member's timeout under
the breaker's latency budget, a window longer than the longest input lookback
(:data:`MAX_INPUT_LOOKBACK`), every ``purge_rows`` at least the label horizon
(``purge_rows: horizon`` is filled in with ``market.horizon_candles``). A
family's parameter names need its constructor, so
``bse_predict.families.base.check_family_params`` checks them; the command
line calls it right after loading.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit
from typing import Any, Literal

import yaml
from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator,
                      model_validator)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["Settings", "load_settings", "DEFAULT_CONFIG_PATH", "TIMEFRAME_MS", "MAX_INPUT_LOOKBACK",
           "PURGE_THE_HORIZON"]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")

MAX_INPUT_LOOKBACK = 192
"""Rows of history the longest model input reads, the current candle included (the ``sequence`` input:
``max(bse_predict.features.inputs.INPUT_LOOKBACK.values())``, which a unit test holds it to; settings
import nothing of the project). A window must keep more: the extra one anchors a gap at its start."""

PURGE_THE_HORIZON = "horizon"
"""``purge_rows: horizon`` in a family's params: replaced at load by ``market.horizon_candles``."""

TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MarketConfig(_Frozen):
    timeframe: str = "1h"
    targets_pct: tuple[float, ...] = (1, 2, 5)
    horizon_hours: int = Field(72, gt=0)

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        if value not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {value!r}; known: {sorted(TIMEFRAME_MS)}")
        return value

    @property
    def timeframe_ms(self) -> int:
        return TIMEFRAME_MS[self.timeframe]

    @property
    def horizon_candles(self) -> int:
        return self.horizon_hours * 3_600_000 // self.timeframe_ms


class CandleRules(_Frozen):
    """What a candle message must be to be let in (docs/candles.md). The plausibility bounds sit far outside
    every candle of ``../shared/data``: the measured extremes are beside the defaults in ``default.yaml``.
    A bound set to ``.inf`` in YAML is off."""

    symbol_pattern: str = r"^[A-Z0-9]{2,20}$"
    max_message_bytes: int = Field(4096, gt=0)
    dead_letter_keep_bytes: int = Field(4096, gt=0, description="a dead letter keeps this much of the original")
    symbols: tuple[str, ...] = Field((), description="only these symbols are served (empty: any that matches the pattern)")
    max_future_ms: int = Field(7_200_000, ge=0)
    min_open_time_ms: int = 1_230_768_000_000
    max_clock_skew_ms: int = Field(5_000, ge=0, description="a closed candle may end (open_time + timeframe) at "
                                                             "most this far ahead of the worker's clock")
    min_price: float = Field(1e-10, gt=0, description="no price (low) under this")
    max_price: float = Field(1e10, gt=0, description="no price (high) over this")
    max_volume: float = Field(1e15, gt=0, description="no volume over this")
    max_high_low_ratio: float = Field(20.0, gt=1, description="high / low of one candle at most this")
    max_close_jump_ratio: float = Field(10.0, gt=1, description="close / the symbol's last close (or its "
                                                                "inverse) at most this")

    @model_validator(mode="after")
    def _price_bounds_ordered(self) -> CandleRules:
        if self.min_price >= self.max_price:
            raise ValueError("candles.min_price must be below candles.max_price")
        return self


class WindowConfig(_Frozen):
    retain_candles: int = Field(400, gt=1, description="closed candles kept per symbol; above MAX_INPUT_LOOKBACK")
    silent_expire_hours: int = Field(
        720, gt=0, description="a symbol's Redis keys (window, marks, pending outcomes) expire this long after its "
                               "last candle; it is then rebuilt from the candles topic if it comes back")
    rebuild_scan_messages: int = Field(200_000, ge=0)

    @field_validator("retain_candles")
    @classmethod
    def _longer_than_every_input(cls, value: int) -> int:
        if value <= MAX_INPUT_LOOKBACK:
            raise ValueError(f"window.retain_candles is {value}: it must be above {MAX_INPUT_LOOKBACK}, the history "
                             "the longest model input reads, to keep the anchor candle too; with fewer every candle "
                             "counts as insufficient history and nothing is predicted")
        return value


class TopicsConfig(_Frozen):
    """How ``ensure_topics`` creates the topics. ``replication_factor`` and ``min_insync_replicas``
    left unset (None) take the cluster's ``default.replication.factor`` and ``min.insync.replicas``."""

    partitions: int = Field(8, gt=0)
    replication_factor: int | None = Field(None, gt=0)
    min_insync_replicas: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _min_isr_within_replicas(self) -> TopicsConfig:
        if (self.replication_factor is not None and self.min_insync_replicas is not None
                and self.min_insync_replicas > self.replication_factor):
            raise ValueError("topics.min_insync_replicas cannot exceed topics.replication_factor")
        return self


class EnsembleServingConfig(_Frozen):
    """How the worker runs an ensemble version (docs/models/ensembles.md): ``members`` (measured
    faster, the default) runs each member's own file side by side on ``threads`` threads,
    drops a member that has not answered within ``member_timeout_ms`` (the rows are ``degraded``)
    and, with ``adaptive``, combines with weights re-fitted from the live outcomes; ``graph`` runs
    the one ONNX graph per target (no timeouts, fixed weights)."""

    mode: Literal["graph", "members"] = "members"
    member_timeout_ms: float = Field(200.0, gt=0)
    threads: int = Field(2, gt=0)
    adaptive: bool = False
    members_retain_hours: int = Field(
        168, gt=0, description="adaptive: a day's member probabilities expire this long after their last write "
                               "(those of predictions that never settle, e.g. a symbol that stopped)")

    @model_validator(mode="after")
    def _adaptive_needs_members(self) -> EnsembleServingConfig:
        if self.adaptive and self.mode != "members":
            raise ValueError("worker.ensemble.adaptive needs mode: members (one graph has fixed weights)")
        return self


class FaultConfig(_Frozen):
    """How the worker meets a failing Redis or broker: the same batch is retried in place with
    exponential backoff; past ``deadline_s`` the process exits non-zero without committing it, for its
    supervisor to restart from the last committed offset (docs/reliability.md)."""

    retry_initial_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(5.0, gt=0)
    deadline_s: float = Field(300.0, gt=0)
    stop_grace_s: float = Field(15.0, gt=0, description="on SIGTERM, how long a batch in hand may take to finish")
    redis_socket_timeout_s: float = Field(5.0, gt=0, description="a Redis reply later than this is a fault")
    redis_connect_timeout_s: float = Field(2.0, gt=0)
    redis_health_check_s: float = Field(10.0, gt=0, description="a connection idle this long is PINGed before use")
    kafka_request_timeout_ms: int = Field(30_000, gt=0, description="a produce not acknowledged by then is a fault")
    attempt_timeout_s: float = Field(90.0, gt=0, description="an attempt at a batch still running after this is "
                                                            "a fault (cancelled and retried)")
    stall_s: float = Field(120.0, gt=0, description="no batch finished for this long while records wait past the "
                                                    "committed offsets: the consumer stalled, the process exits 75")
    inject_failure_probability: float = Field(
        0.0, ge=0.0, lt=1.0, description="test hook of the chaos suite: each processing stage raises with this chance")

    @model_validator(mode="after")
    def _backoff_in_order(self) -> FaultConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("worker.faults.retry_max_s must be at least retry_initial_s")
        return self


class WorkerConfig(_Frozen):
    app_id: str = "bse-predict"
    batch_max_events: int = Field(256, gt=0)
    batch_within_ms: float = Field(2, gt=0)
    inference_threads: int = Field(1, gt=0)
    session_timeout_s: float = Field(10.0, gt=0)
    rebuild_from_files: tuple[Path, ...] = ()
    ensemble: EnsembleServingConfig = EnsembleServingConfig()
    faults: FaultConfig = FaultConfig()
    max_symbols: int = Field(5000, gt=0, description="at most this many different symbols are served fleet-wide; "
                                                     "candles of others are dead letters (symbol_cap)")


class TargetThresholds(_Frozen):
    strong: float = Field(0.65, gt=0.5, le=1.0)
    normal: float = Field(0.56, gt=0.5, le=1.0)


class SignalThresholds(_Frozen):
    """Confidence thresholds (``strong``/``normal`` for every target unless ``per_target`` names it),
    the optional rule that a signal needs a positive expected value after costs, and those costs
    (one side each, in percent: a round trip pays 2 × (taker fee + slippage); the backtest charges
    the same)."""

    strong: float = Field(0.65, gt=0.5, le=1.0)
    normal: float = Field(0.56, gt=0.5, le=1.0)
    per_target: dict[str, TargetThresholds] = {}
    require_positive_ev: bool = False
    taker_fee_pct: float = Field(0.05, ge=0.0)
    slippage_pct: float = Field(0.02, ge=0.0)

    def for_target(self, target: str | None) -> TargetThresholds:
        chosen = self.per_target.get(target) if target is not None else None
        return chosen or TargetThresholds(strong=self.strong, normal=self.normal)

    @property
    def round_trip_cost_pct(self) -> float:
        return 2.0 * (self.taker_fee_pct + self.slippage_pct)


class BacktestConfig(_Frozen):
    max_open_per_symbol_target: int = Field(1, gt=0)


class FamilyConfig(_Frozen):
    """One model family: on or off, its hyperparameters, and per-target overrides ("5%": {...})."""

    enabled: bool = True
    params: dict[str, Any] = {}
    per_target: dict[str, dict[str, Any]] = {}


class ModelConfig(_Frozen):
    """The model zoo: which families train, with which hyperparameters, and which one serves. No Python
    default: the zoo is ``models`` in ``configs/default.yaml``, the one source of the shipped defaults."""

    served: str
    families: dict[str, FamilyConfig]

    def enabled(self) -> list[str]:
        return [name for name, family in self.families.items() if family.enabled]

    def params_for(self, family: str, target: str) -> dict[str, Any]:
        """A family's constructor arguments for ``target``. An ensemble (params with ``members``)
        gets each member's own block as ``member_params`` unless it gives them itself."""
        config = self.families[family]
        params = {**config.params, **config.per_target.get(target, {})}
        if "members" in params and params.get("member_params") is None:
            params["member_params"] = {m: self.params_for(m, target) for m in params["members"] if m in self.families}
        return params


class TrainingConfig(_Frozen):
    max_rows_per_symbol: int | None = None
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    validation_fraction: float = Field(0.15, ge=0.0, lt=1.0)


class AlertThreshold(_Frozen):
    """When a target's call is worth a Telegram alert: both conditions must hold."""

    min_confidence: float = Field(0.62, ge=0.5, le=1.0)  # on the contract's confidence
    min_probability: float = Field(0.4, ge=0.0, le=1.0)  # on p_up or p_down, whichever is called


class AlertsConfig(_Frozen):
    """``bse-predict alerts``: what is sent to Telegram, when, and how politely."""

    thresholds: dict[str, AlertThreshold] = {
        "1%": AlertThreshold(min_probability=0.50),
        "2%": AlertThreshold(min_probability=0.40),
        "5%": AlertThreshold(min_probability=0.25),
    }  # a target not listed is never alerted
    cooldown_hours: float = Field(12.0, ge=0.0)
    degraded: Literal["flag", "hold"] = "flag"
    chats: tuple[str, ...] = ()
    digest: bool = True
    digest_every_hours: int = Field(1, gt=0)
    summary: bool = True
    summary_window_days: int = Field(7, gt=0)
    summary_min_samples: int = Field(20, gt=0)
    chart: bool = True
    rate_per_chat_per_s: float = Field(1.0, gt=0)
    burst_per_chat: int = Field(3, gt=0)
    rate_total_per_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(8, gt=0)
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    max_message_chars: int = Field(4096, ge=200, le=4096)
    state_ttl_hours: int = Field(240, gt=0)
    group_id: str = "bse-predict-alerts"
    start_from: Literal["earliest", "latest"] = "latest"
    poll_timeout_ms: int = Field(1000, gt=0)
    session_timeout_s: float = Field(10.0, ge=6.0)
    claim_ttl_s: float = Field(30.0, ge=1.0)
    claim_poll_ms: int = Field(200, gt=0)
    lease_ttl_s: float = Field(15.0, ge=1.0)
    stale_after_hours: float = Field(3.0, gt=0)

    def chat_ids(self, env_chat_ids: str | None) -> tuple[str, ...]:
        """TELEGRAM_CHAT_ID (comma-separated) first, then ``chats``; duplicates dropped."""
        listed = [c.strip() for c in (env_chat_ids or "").split(",")] + [c.strip() for c in self.chats]
        return tuple(dict.fromkeys(c for c in listed if c))


class OutcomesConfig(_Frozen):
    """Live outcomes: every published prediction is settled by the candles that follow it."""

    enabled: bool = True
    settled_retain_hours: int = Field(720, gt=0)


class LiveMetricsConfig(_Frozen):
    """Rolling live scores per version, arm and target, and the worker's Prometheus endpoint."""

    windows_hours: tuple[int, ...] = (24, 168)
    bucket_minutes: int = Field(60, gt=0)
    calibration_bins: int = Field(10, gt=1)
    metrics_port: int = Field(0, ge=0, le=65535)
    refresh_s: float = Field(15.0, gt=0)


class ChallengerConfig(_Frozen):
    """The always-valid champion/challenger test on paired log-loss differences."""

    enabled: bool = True
    auto_promote: bool = False
    alpha: float = Field(0.05, gt=0, lt=1)
    loss_clip_nats: float = Field(5.0, gt=0)
    issued_by: str = "auto-challenger"
    retain_hours: int = Field(720, gt=0, description="a version pair's evidence expires this long after its last pair")


class DriftConfig(_Frozen):
    """Per-feature PSI between the training distribution and the live one."""

    enabled: bool = True
    psi_threshold: float = Field(0.25, gt=0)
    min_rows: int = Field(500, gt=0)
    check_every_rows: int = Field(500, gt=0)
    window_days: int = Field(7, gt=0)


class BreakerConfig(_Frozen):
    """The circuit breaker of every served model (bse_predict/serving/breaker.py)."""

    window_calls: int = Field(20, gt=0)
    failures_to_open: int = Field(3, gt=0)
    latency_budget_ms: float = Field(250.0, gt=0)
    open_s: float = Field(10.0, ge=0)
    probes_to_close: int = Field(2, gt=0)


MIN_CONTROL_SECRET_CHARS = 32  # an HMAC-SHA256 key: 32 bytes is the hash's own size (RFC 2104)
CONTROL_KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def parse_control_keys(text: str) -> dict[str, str]:
    """``BSE_CONTROL_KEYS`` (``id=secret,id2=secret2``) as {key id: secret}; ValueError naming the entry
    (never the secret) that is not ``id=secret`` with a valid id and a secret of 32 characters or more.
    A secret may hold ``=`` but not ``,``; spaces around entries are ignored."""
    keys: dict[str, str] = {}
    for number, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        key_id, sep, secret = entry.partition("=")
        key_id = key_id.strip()
        if not sep or not re.fullmatch(CONTROL_KEY_ID_PATTERN, key_id):
            raise ValueError(f"BSE_CONTROL_KEYS entry {number} must be id=secret, the id 1-64 letters, digits, "
                             "'.', '_' or '-'")
        if key_id in keys:
            raise ValueError(f"BSE_CONTROL_KEYS names key {key_id!r} twice")
        if len(secret) < MIN_CONTROL_SECRET_CHARS:
            raise ValueError(f"BSE_CONTROL_KEYS key {key_id!r} is shorter than {MIN_CONTROL_SECRET_CHARS} "
                             "characters (`bse-predict control rotate` makes one)")
        keys[key_id] = secret
    return keys


class ControlConfig(_Frozen):
    """The control plane: message freshness and size, how often workers look for a new state, how
    transient Redis and Kafka faults are retried, the breakers."""

    max_age_s: float = Field(300.0, gt=0)
    max_future_s: float = Field(30.0, ge=0)
    max_message_bytes: int = Field(8192, gt=0)
    poll_interval_s: float = Field(0.2, gt=0)
    tick_interval_s: float = Field(1.0, gt=0)
    retry_initial_s: float = Field(0.1, gt=0)
    retry_max_s: float = Field(5.0, gt=0)
    io_timeout_s: float = Field(5.0, gt=0)
    breaker: BreakerConfig = BreakerConfig()


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecurity(_Frozen):
    """How every Kafka client of the project authenticates and encrypts (docs/security.md). The
    environment names are ``BSE_KAFKA_<FIELD>`` (``BSE_KAFKA_SASL_PASSWORD``); the password and the
    key's passphrase come from the environment only."""

    security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates "
                                                       "(none: the system's trusted CAs)")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mTLS")
    ssl_keyfile: Path | None = Field(None, description="the client certificate's private key (PEM)")
    ssl_keyfile_password: SecretStr | None = None
    ssl_check_hostname: bool = Field(True, description="the broker's certificate must name the host dialled")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.uses_sasl:
            if self.sasl_mechanism is None:
                raise ValueError(f"kafka.security_protocol {self.security_protocol} needs kafka.sasl_mechanism")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(f"kafka.security_protocol {self.security_protocol} needs BSE_KAFKA_SASL_USERNAME "
                                 "and BSE_KAFKA_SASL_PASSWORD")
        elif self.sasl_mechanism is not None or self.sasl_username or self.sasl_password is not None:
            raise ValueError(f"SASL settings given but kafka.security_protocol is {self.security_protocol}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("kafka.ssl_certfile and kafka.ssl_keyfile go together (mTLS)")
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.uses_tls and any(f is not None for f in tls_files):
            raise ValueError(f"TLS files given but kafka.security_protocol is {self.security_protocol}")
        return self


class RedisTls(_Frozen):
    """TLS of the Redis connection, used with a ``rediss://`` URL (environment ``BSE_REDIS_<FIELD>``).
    The ACL user and password go in the URL: ``rediss://user:password@host:6380/0``."""

    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the server's certificate")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM) when the server asks for one")
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> RedisTls:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("redis.ssl_certfile and redis.ssl_keyfile go together")
        return self


# Settings that hold a secret: only the environment may set them, never a config file.
ENVIRONMENT_ONLY: tuple[tuple[str, ...], ...] = (
    ("control_secret",), ("control_keys",), ("model_signing_secret",), ("telegram_bot_token",),
    ("kafka", "sasl_password"), ("kafka", "ssl_keyfile_password"),
)


class _BlockEnvironment(PydanticBaseSettingsSource):
    """``BSE_KAFKA_<FIELD>`` and ``BSE_REDIS_<FIELD>`` for the fields of the ``kafka`` and ``redis``
    blocks: the contract's flat names, without a nested delimiter."""

    _BLOCKS: dict[str, type[BaseModel]] = {"kafka": KafkaSecurity, "redis": RedisTls}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for block, model in self._BLOCKS.items():
            values = {name: os.environ[env] for name in model.model_fields
                      if (env := f"BSE_{block}_{name}".upper()) in os.environ}
            if values:
                found[block] = values
        return found


class _ShippedDefaults(PydanticBaseSettingsSource):
    """``configs/default.yaml``, the lowest layer of every :class:`Settings`: the one source of the defaults."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        shipped = _read_yaml(DEFAULT_CONFIG_PATH)
        _refuse_secrets(shipped, DEFAULT_CONFIG_PATH)
        return shipped


def _fill_horizon(node: Any, horizon_candles: int) -> Any:
    """``node`` (a ``models`` block, as data) with every ``purge_rows: horizon`` set to ``horizon_candles``
    (and a number from the environment, a string there, made a number)."""
    if isinstance(node, BaseModel):
        node = node.model_dump()
    if not isinstance(node, dict):
        return node
    filled = {key: _fill_horizon(value, horizon_candles) for key, value in node.items()}
    rows = filled.get("purge_rows")
    if rows == PURGE_THE_HORIZON:
        filled["purge_rows"] = horizon_candles
    elif isinstance(rows, str) and rows.strip().isdigit():
        filled["purge_rows"] = int(rows)
    return filled


def _purge_rows(node: Any, where: str) -> list[tuple[str, Any]]:
    """(path, value) of every ``purge_rows`` inside ``node`` (nested parameter blocks included)."""
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        found += [(f"{where}.{key}", value)] if key == "purge_rows" else _purge_rows(value, f"{where}.{key}")
    return found


class Settings(BaseSettings):
    """Every setting of bse-predict; frozen once built. ``Settings()`` is the shipped defaults of
    ``configs/default.yaml`` (read as the lowest layer) under the environment; :func:`load_settings`
    puts a ``--config`` file and overrides between the two."""

    # hide_input_in_errors: a refused value may be a secret (a short BSE_CONTROL_SECRET); never print it.
    # env_nested_delimiter: BSE_WORKER__BATCH_MAX_EVENTS sets worker.batch_max_events.
    model_config = SettingsConfigDict(env_prefix="BSE_", env_nested_delimiter="__", frozen=True, extra="forbid",
                                      hide_input_in_errors=True)

    kafka_bootstrap: str = "localhost:9092"
    redis_url: SecretStr = Field(SecretStr("redis://localhost:6379/0"),
                                 description="a secret: it may carry the ACL user's password")
    topic_prefix: str = ""
    models_dir: Path = Path("artifacts/models")
    control_secret: SecretStr | None = Field(
        None, description="the signing key of control messages (and of control.state), at least 32 characters")
    control_key_id: str = Field("primary", pattern=CONTROL_KEY_ID_PATTERN,
                                description="the id of control_secret, sent as key_id in every control message")
    control_keys: SecretStr | None = Field(
        None, description="more keys that verify control messages during a rotation: id=secret,id2=secret2")

    @field_validator("control_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # not set: every control message is refused
        if len(value.get_secret_value()) < MIN_CONTROL_SECRET_CHARS:
            raise ValueError(f"BSE_CONTROL_SECRET is shorter than {MIN_CONTROL_SECRET_CHARS} characters "
                             "(`bse-predict control rotate` makes one)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _tls_only_from_settings(cls, value: SecretStr) -> SecretStr:
        """redis-py lets a URL's query override its arguments: ``?ssl_cert_reqs=none`` would turn the
        certificate check off. TLS options come from the ``redis`` block only."""
        url = urlsplit(value.get_secret_value())
        if url.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"BSE_REDIS_URL must start with redis://, rediss:// or unix://, not {url.scheme!r}")
        overrides = sorted({name for name, _ in parse_qsl(url.query) if name.lower().startswith("ssl")})
        if overrides:
            raise ValueError(f"BSE_REDIS_URL sets {', '.join(overrides)}: TLS options come from BSE_REDIS_SSL_* "
                             "(the server's certificate is always checked)")
        return value

    @field_validator("control_keys")
    @classmethod
    def _key_list(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        extra = parse_control_keys(value.get_secret_value())
        signing_id, signing = info.data.get("control_key_id"), info.data.get("control_secret")
        if signing_id in extra and (signing is None or extra[signing_id] != signing.get_secret_value()):
            raise ValueError(f"BSE_CONTROL_KEYS gives key {signing_id!r} (BSE_CONTROL_KEY_ID, the signing key) "
                             "another secret than BSE_CONTROL_SECRET")
        return value

    model_signing_secret: SecretStr | None = Field(
        None, description="when set, every model version's manifest must carry a valid HMAC-SHA256 under it")
    kafka: KafkaSecurity = KafkaSecurity()
    redis: RedisTls = RedisTls()
    telegram_bot_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN", "telegram_bot_token")
    )
    telegram_chat_id: str | None = Field(
        None, validation_alias=AliasChoices("TELEGRAM_CHAT_ID", "telegram_chat_id")
    )
    telegram_api_url: str = Field(
        "https://api.telegram.org",
        validation_alias=AliasChoices("TELEGRAM_API_URL", "telegram_api_url"),
    )

    market: MarketConfig = MarketConfig()
    candles: CandleRules = CandleRules()
    window: WindowConfig = WindowConfig()
    topics: TopicsConfig = TopicsConfig()
    worker: WorkerConfig = WorkerConfig()
    signals: SignalThresholds = SignalThresholds()
    backtest: BacktestConfig = BacktestConfig()
    training: TrainingConfig = TrainingConfig()
    models: ModelConfig  # no Python default: the zoo comes from configs/default.yaml
    outcomes: OutcomesConfig = OutcomesConfig()
    live_metrics: LiveMetricsConfig = LiveMetricsConfig()
    challenger: ChallengerConfig = ChallengerConfig()
    drift: DriftConfig = DriftConfig()
    alerts: AlertsConfig = AlertsConfig()
    control: ControlConfig = ControlConfig()

    # Cross-field rules. Fields are validated in the order above, so each rule sits on the later field
    # and reads the earlier one from ``info.data`` (absent when it failed: its own error is reported).

    @field_validator("models", mode="before")
    @classmethod
    def _purge_the_horizon(cls, value: Any, info: ValidationInfo) -> Any:
        market = info.data.get("market")
        return value if market is None else _fill_horizon(value, market.horizon_candles)

    @field_validator("models")
    @classmethod
    def _purge_at_least_the_horizon(cls, value: ModelConfig, info: ValidationInfo) -> ModelConfig:
        """Fewer purged rows than the horizon would let training labels read the validation candles."""
        market = info.data.get("market")
        if market is None:
            return value
        for name, family in value.families.items():
            blocks = {"params": family.params, **{f"per_target.{t}": p for t, p in family.per_target.items()}}
            for block, params in blocks.items():
                for where, rows in _purge_rows(params, f"models.families.{name}.{block}"):
                    if isinstance(rows, bool) or not isinstance(rows, int) or rows < market.horizon_candles:
                        raise ValueError(
                            f"{where} is {rows!r}: it must be {PURGE_THE_HORIZON!r} or at least the label horizon, "
                            f"{market.horizon_candles} candles (market.horizon_hours {market.horizon_hours} on "
                            f"{market.timeframe} candles)")
        return value

    @field_validator("control")
    @classmethod
    def _member_timeout_within_budget(cls, value: ControlConfig, info: ValidationInfo) -> ControlConfig:
        worker = info.data.get("worker")
        if worker is None or worker.ensemble.mode != "members":
            return value
        timeout_ms, budget_ms = worker.ensemble.member_timeout_ms, value.breaker.latency_budget_ms
        if timeout_ms >= budget_ms:
            raise ValueError(f"worker.ensemble.member_timeout_ms ({timeout_ms:g}) must be under "
                             f"control.breaker.latency_budget_ms ({budget_ms:g}): a batch that waits out a slow "
                             "member would count as a failed call and the breaker would open")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment beats the --config file and overrides (init kwargs), which beat the shipped defaults.
        return env_settings, _BlockEnvironment(settings_cls), init_settings, _ShippedDefaults(settings_cls)

    def topic(self, name: str) -> str:
        """The full name of a contract topic, with the configured prefix."""
        return f"{self.topic_prefix}{name}"


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    return loaded


def _refuse_secrets(layer: dict[str, Any], path: Path) -> None:
    """A secret in a config file would be copied, committed and printed: only the environment sets them."""
    for keys in ENVIRONMENT_ONLY:
        node: Any = layer
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            env = "BSE_" + "_".join(keys).upper() if keys != ("telegram_bot_token",) else "TELEGRAM_BOT_TOKEN"
            raise ValueError(f"{path} sets {'.'.join(keys)}: a secret comes from the environment only ({env})")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: the shipped defaults (read by :class:`Settings` itself), then ``config_file``, then
    ``overrides``, then the environment; each layer deep-merged over the one below."""
    layered: dict[str, Any] = {}
    if config_file is not None:
        layered = _read_yaml(Path(config_file))
        _refuse_secrets(layered, Path(config_file))
    return Settings(**_deep_merge(layered, overrides))
