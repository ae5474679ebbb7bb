"""The one settings object of bse-predict.

Layering, lowest to highest priority: ``configs/default.yaml``, the file given
with ``--config`` (deep-merged), then environment variables (``BSE_*`` and the
``TELEGRAM_*`` names of the contract). Build it once at start-up with
:func:`load_settings` and pass it down; nothing reads the environment later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["Settings", "load_settings", "DEFAULT_CONFIG_PATH", "TIMEFRAME_MS"]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")

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
    symbol_pattern: str = r"^[A-Z0-9]{2,20}$"
    max_message_bytes: int = Field(4096, gt=0)
    dead_letter_keep_bytes: int = Field(4096, gt=0, description="a dead letter keeps this much of the original")
    symbols: tuple[str, ...] = Field((), description="only these symbols are served (empty: any that matches the pattern)")
    max_future_ms: int = Field(7_200_000, ge=0)
    min_open_time_ms: int = 1_230_768_000_000


class WindowConfig(_Frozen):
    retain_candles: int = Field(400, gt=1)
    silent_expire_hours: int = Field(
        720, gt=0, description="a symbol's Redis keys (window, marks, pending outcomes) expire this long after its "
                               "last candle; it is then rebuilt from the candles topic if it comes back")
    rebuild_scan_messages: int = Field(200_000, ge=0)


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
    """The model zoo: which families train, with which hyperparameters, and which one serves."""

    served: str = "random_forest"
    families: dict[str, FamilyConfig] = {"random_forest": FamilyConfig()}

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

    thresholds: dict[str, AlertThreshold] = {}
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
    """The circuit breaker of every served model (models/breaker.py)."""

    window_calls: int = Field(20, gt=0)
    failures_to_open: int = Field(3, gt=0)
    latency_budget_ms: float = Field(250.0, gt=0)
    open_s: float = Field(10.0, ge=0)
    probes_to_close: int = Field(2, gt=0)


class ControlConfig(_Frozen):
    """The control plane: message freshness and size, how often workers look for a new state, how
    transient Redis and Kafka faults are retried, the breakers."""

    max_age_s: float = Field(300.0, gt=0)
    max_future_s: float = Field(30.0, ge=0)
    max_message_bytes: int = Field(65_536, gt=0)
    poll_interval_s: float = Field(0.2, gt=0)
    tick_interval_s: float = Field(1.0, gt=0)
    retry_initial_s: float = Field(0.1, gt=0)
    retry_max_s: float = Field(5.0, gt=0)
    io_timeout_s: float = Field(5.0, gt=0)
    breaker: BreakerConfig = BreakerConfig()


class Settings(BaseSettings):
    """Every setting of bse-predict; frozen once built."""

    model_config = SettingsConfigDict(env_prefix="BSE_", frozen=True, extra="forbid")

    kafka_bootstrap: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    topic_prefix: str = ""
    models_dir: Path = Path("artifacts/models")
    control_secret: SecretStr | None = None
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
    models: ModelConfig = ModelConfig()
    outcomes: OutcomesConfig = OutcomesConfig()
    live_metrics: LiveMetricsConfig = LiveMetricsConfig()
    challenger: ChallengerConfig = ChallengerConfig()
    drift: DriftConfig = DriftConfig()
    alerts: AlertsConfig = AlertsConfig()
    control: ControlConfig = ControlConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment beats the YAML files, which arrive as init kwargs.
        return env_settings, init_settings

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


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: defaults, then ``config_file``, then ``overrides``, then the environment."""
    layered = _read_yaml(DEFAULT_CONFIG_PATH)
    if config_file is not None:
        layered = _deep_merge(layered, _read_yaml(Path(config_file)))
    layered = _deep_merge(layered, overrides)
    return Settings(**layered)
