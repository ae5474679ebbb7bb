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

**Where the blocks live.** This module holds :class:`Settings`, its layering
and the rules that span blocks; each block is defined beside its neighbours and
re-exported here, so ``from configs.settings import CandleRules`` works:

- ``configs.market``: ``market`` (:data:`TIMEFRAME_MS`);
- ``configs.stream``: ``candles``, ``window``, ``worker`` (its ``ensemble`` and ``faults``);
- ``configs.models``: ``models``, ``training``, ``signals``, ``backtest``;
- ``configs.monitoring``: ``outcomes``, ``live_metrics``, ``drift``, ``challenger``;
- ``configs.alerts``: ``alerts``;
- ``configs.archive``: ``archive``;
- ``configs.control``: ``control`` (its ``breaker``) and the control keys;
- ``configs.connections``: ``kafka``, ``redis``, ``topics``;
- ``configs.ingest``: ``ingest`` (its ``spot`` and ``futures`` endpoints);
- ``configs.retrain``: ``retrain`` (its ``gate``);
- ``configs.dashboard``: ``dashboard``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from configs.alerts import AlertsConfig, AlertThreshold
from configs.archive import ArchiveConfig
from configs.connections import KafkaSecurity, KafkaSecurityProtocol, RedisTls, SaslMechanism, TopicsConfig
from configs.ingest import ExchangeEndpoints, IngestConfig, IngestMarket
from configs.dashboard import DashboardConfig
from configs.control import (CONTROL_KEY_ID_PATTERN, MIN_CONTROL_SECRET_CHARS, BreakerConfig, ControlConfig,
                             parse_control_keys)
from configs.market import TIMEFRAME_MS, MarketConfig
from configs.models import (PURGE_THE_HORIZON, BacktestConfig, FamilyConfig, ModelConfig, SignalThresholds,
                            TargetThresholds, TrainingConfig, fill_the_horizon, find_purge_rows)
from configs.monitoring import ChallengerConfig, DriftConfig, LiveMetricsConfig, OutcomesConfig
from configs.retrain import RetrainConfig, RetrainGateConfig
from configs.stream import (MAX_INPUT_LOOKBACK, CandleRules, EnsembleServingConfig, FaultConfig, WindowConfig,
                            WorkerConfig)

__all__ = [
    "Settings", "load_settings", "DEFAULT_CONFIG_PATH", "ENVIRONMENT_ONLY",
    # re-exported from the blocks' modules
    "TIMEFRAME_MS", "MarketConfig",
    "MAX_INPUT_LOOKBACK", "CandleRules", "WindowConfig", "EnsembleServingConfig", "FaultConfig", "WorkerConfig",
    "PURGE_THE_HORIZON", "TargetThresholds", "SignalThresholds", "BacktestConfig", "FamilyConfig", "ModelConfig",
    "TrainingConfig",
    "OutcomesConfig", "LiveMetricsConfig", "ChallengerConfig", "DriftConfig",
    "AlertThreshold", "AlertsConfig", "ArchiveConfig",
    "MIN_CONTROL_SECRET_CHARS", "CONTROL_KEY_ID_PATTERN", "parse_control_keys", "BreakerConfig", "ControlConfig",
    "TopicsConfig", "KafkaSecurityProtocol", "SaslMechanism", "KafkaSecurity", "RedisTls",
    "IngestMarket", "ExchangeEndpoints", "IngestConfig", "RetrainConfig", "RetrainGateConfig", "DashboardConfig",
]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")


# Settings that hold a secret: only the environment may set them, never a config file.
ENVIRONMENT_ONLY: tuple[tuple[str, ...], ...] = (
    ("control_secret",), ("control_keys",), ("model_signing_secret",), ("telegram_bot_token",),
    ("kafka", "sasl_password"), ("kafka", "ssl_keyfile_password"), ("dashboard", "token"),
)


class _BlockEnvironment(PydanticBaseSettingsSource):
    """``BSE_KAFKA_<FIELD>``, ``BSE_REDIS_<FIELD>`` and ``BSE_DASHBOARD_<FIELD>`` for the fields of the
    ``kafka``, ``redis`` and ``dashboard`` blocks: the contract's flat names, without a nested delimiter
    (``BSE_DASHBOARD__TOKEN``, the nested form, works too)."""

    _BLOCKS: dict[str, type[BaseModel]] = {"kafka": KafkaSecurity, "redis": RedisTls, "dashboard": DashboardConfig}

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
    archive: ArchiveConfig = ArchiveConfig()
    control: ControlConfig = ControlConfig()
    ingest: IngestConfig = IngestConfig()
    retrain: RetrainConfig = RetrainConfig()
    dashboard: DashboardConfig = DashboardConfig()

    # Cross-field rules. Fields are validated in the order above, so each rule sits on the later field
    # and reads the earlier one from ``info.data`` (absent when it failed: its own error is reported).

    @field_validator("models", mode="before")
    @classmethod
    def _purge_the_horizon(cls, value: Any, info: ValidationInfo) -> Any:
        market = info.data.get("market")
        return value if market is None else fill_the_horizon(value, market.horizon_candles)

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
                for where, rows in find_purge_rows(params, f"models.families.{name}.{block}"):
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

    @field_validator("retrain")
    @classmethod
    def _retrain_purges_the_horizon(cls, value: RetrainConfig, info: ValidationInfo) -> RetrainConfig:
        """The holdout's purge and the bootstrap's blocks must each span at least the label horizon."""
        market = info.data.get("market")
        if market is None:
            return value
        if value.purge_hours is not None and value.purge_hours < market.horizon_hours:
            raise ValueError(f"retrain.purge_hours ({value.purge_hours}) must be at least market.horizon_hours "
                             f"({market.horizon_hours}): training labels would read the holdout's candles")
        if value.gate.block_days * 24 < market.horizon_hours:
            raise ValueError(f"retrain.gate.block_days ({value.gate.block_days}) must span market.horizon_hours "
                             f"({market.horizon_hours}): overlapping labels would be split across blocks")
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

