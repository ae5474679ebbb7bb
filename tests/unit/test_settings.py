"""The settings: one source of defaults, the cross-field rules checked at load, the environment
(flat contract names and nested ``__`` names), family parameters checked against their constructors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from typer.testing import CliRunner

from bse_predict.cli import app
from bse_predict.families import list_models
from bse_predict.families.base import InvalidFamilyParams, check_family_params
from bse_predict.features.inputs import INPUT_LOOKBACK
from configs.settings import MAX_INPUT_LOOKBACK, Settings, load_settings

PURGING = ("xgboost", "lightgbm", "lstm", "ensemble")  # default.yaml's families holding out a purged slice


@pytest.fixture(autouse=True)
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BSE_* or TELEGRAM_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(("BSE_", "TELEGRAM_")):
            monkeypatch.delenv(name)


def _refusal(**overrides: object) -> str:
    with pytest.raises(ValidationError) as refused:
        load_settings(**overrides)
    return str(refused.value)


# ---------------------------------------------------------------- one source of defaults

def test_settings_without_a_file_are_the_shipped_defaults() -> None:
    assert Settings() == load_settings()
    assert Settings().models.served == "ensemble"
    assert set(Settings().models.families) == set(list_models())  # one block per registered family


def test_every_block_built_alone_equals_the_shipped_one() -> None:
    """The blocks' Python defaults (for a block built on its own) cannot drift from default.yaml."""
    shipped = Settings()
    for name, field in Settings.model_fields.items():
        if isinstance(field.default, BaseModel):
            assert type(field.default)() == getattr(shipped, name), name
    assert Settings.model_fields["models"].is_required()  # the zoo lives in default.yaml only


def test_a_config_file_and_overrides_layer_over_the_shipped_defaults(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("worker:\n  batch_max_events: 64\nmodels:\n  served: xgboost\n")
    settings = load_settings(config, worker={"inference_threads": 3})
    assert (settings.worker.batch_max_events, settings.worker.inference_threads) == (64, 3)
    assert settings.worker.app_id == Settings().worker.app_id  # untouched values stay the shipped ones
    assert settings.models.served == "xgboost" and settings.models.families == Settings().models.families


# ---------------------------------------------------------------- rules checked at load

def test_the_window_constant_is_the_longest_input_lookback() -> None:
    assert MAX_INPUT_LOOKBACK == max(INPUT_LOOKBACK.values())


def test_a_window_must_be_longer_than_the_longest_input() -> None:
    refusal = _refusal(window={"retain_candles": MAX_INPUT_LOOKBACK})
    assert f"window.retain_candles is {MAX_INPUT_LOOKBACK}: it must be above {MAX_INPUT_LOOKBACK}" in refusal
    assert load_settings(window={"retain_candles": MAX_INPUT_LOOKBACK + 1}).window.retain_candles == 193


def test_a_member_timeout_must_be_under_the_breaker_budget() -> None:
    refusal = _refusal(worker={"ensemble": {"member_timeout_ms": 300}})
    assert "worker.ensemble.member_timeout_ms (300) must be under control.breaker.latency_budget_ms (250)" in refusal
    assert "must be under" in _refusal(control={"breaker": {"latency_budget_ms": 200}})
    fits = load_settings(worker={"ensemble": {"member_timeout_ms": 300}},
                         control={"breaker": {"latency_budget_ms": 400}})
    assert fits.worker.ensemble.member_timeout_ms == 300
    graph = load_settings(worker={"ensemble": {"mode": "graph", "member_timeout_ms": 300}})  # no member timeouts
    assert graph.worker.ensemble.mode == "graph"


def test_purge_rows_is_the_label_horizon() -> None:
    def purges(settings: Settings) -> set[int]:
        params = [settings.models.params_for(family, "1%") for family in PURGING]
        params.append(settings.models.params_for("xgboost_regimes", "1%")["base_params"])
        return {p["purge_rows"] for p in params}

    assert purges(load_settings()) == {72}
    assert purges(load_settings(market={"horizon_hours": 24})) == {24}
    assert purges(load_settings(market={"timeframe": "4h", "horizon_hours": 72})) == {18}  # candles, not hours


def test_purge_rows_below_the_horizon_is_refused() -> None:
    refusal = _refusal(market={"horizon_hours": 96}, models={"families": {"lstm": {"params": {"purge_rows": 72}}}})
    assert "models.families.lstm.params.purge_rows is 72: it must be 'horizon' or at least the label horizon, " \
           "96 candles" in refusal
    per_target = _refusal(models={"families": {"xgboost": {"per_target": {"5%": {"purge_rows": 10}}}}})
    assert "models.families.xgboost.per_target.5%.purge_rows is 10" in per_target
    wider = load_settings(models={"families": {"lstm": {"params": {"purge_rows": 100}}}})
    assert wider.models.families["lstm"].params["purge_rows"] == 100


# ---------------------------------------------------------------- the environment

def test_a_nested_value_is_set_with_a_double_underscore(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("worker:\n  batch_max_events: 64\n")
    monkeypatch.setenv("BSE_WORKER__BATCH_MAX_EVENTS", "7")
    monkeypatch.setenv("BSE_WORKER__ENSEMBLE__MEMBER_TIMEOUT_MS", "120")
    monkeypatch.setenv("BSE_CONTROL__BREAKER__OPEN_S", "3")
    monkeypatch.setenv("BSE_MODELS__FAMILIES__LSTM__PARAMS__PURGE_ROWS", "96")
    settings = load_settings(config)  # the environment beats the file
    assert settings.worker.batch_max_events == 7 and settings.worker.ensemble.member_timeout_ms == 120
    assert settings.control.breaker.open_s == 3 and settings.models.families["lstm"].params["purge_rows"] == 96
    assert Settings().worker.batch_max_events == 7
    monkeypatch.setenv("BSE_WORKER__BATCH_MAX_EVENT", "7")
    with pytest.raises(ValidationError, match="batch_max_event"):
        load_settings()


def test_the_contract_names_keep_working(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s" * 32
    for name, value in {"BSE_KAFKA_BOOTSTRAP": "k1:9096,k2:9096", "BSE_REDIS_URL": "rediss://u:p@r:6380/0",
                        "BSE_TOPIC_PREFIX": "staging.", "BSE_MODELS_DIR": "/srv/models", "BSE_CONTROL_SECRET": secret,
                        "BSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "BSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                        "BSE_KAFKA_SASL_USERNAME": "bse", "BSE_KAFKA_SASL_PASSWORD": "pw",
                        "BSE_KAFKA_SSL_CAFILE": "/ca.pem", "BSE_REDIS_SSL_CAFILE": "/redis-ca.pem",
                        "TELEGRAM_BOT_TOKEN": "t", "TELEGRAM_CHAT_ID": "-100", "TELEGRAM_API_URL": "http://tg"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.kafka_bootstrap, settings.topic_prefix, settings.models_dir) == \
           ("k1:9096,k2:9096", "staging.", Path("/srv/models"))
    assert settings.redis_url == SecretStr("rediss://u:p@r:6380/0") and settings.control_secret == SecretStr(secret)
    assert (settings.kafka.security_protocol, settings.kafka.sasl_mechanism, settings.kafka.sasl_username) == \
           ("SASL_SSL", "SCRAM-SHA-512", "bse")
    assert settings.kafka.sasl_password == SecretStr("pw") and settings.kafka.ssl_cafile == Path("/ca.pem")
    assert settings.redis.ssl_cafile == Path("/redis-ca.pem")
    assert (settings.telegram_bot_token, settings.telegram_chat_id, settings.telegram_api_url) == \
           (SecretStr("t"), "-100", "http://tg")


# ---------------------------------------------------------------- family parameters

def test_the_shipped_family_params_fit_their_constructors() -> None:
    check_family_params(load_settings())


@pytest.mark.parametrize(("families", "reason"), [
    ({"xgboost": {"params": {"n_estimator": 3}}},
     "models.families.xgboost.params: family 'xgboost' has no parameter 'n_estimator'; known: n_estimators, "),
    ({"lstm": {"per_target": {"5%": {"epoch": 3}}}}, "models.families.lstm.per_target.5%: family 'lstm' has no "
                                                     "parameter 'epoch'; known: "),
    ({"random_forest_regimes": {"params": {"base_params": {"depth": 3}}}},
     "models.families.random_forest_regimes.params.base_params: family 'random_forest' has no parameter 'depth'"),
    ({"ensemble": {"params": {"member_params": {"lstm": {"unit": 8}}}}},
     "models.families.ensemble.params.member_params.lstm: family 'lstm' has no parameter 'unit'"),
    ({"nope": {"enabled": False}}, "models.families.nope: unknown model family 'nope'; known: ensemble, "),
])
def test_an_unknown_family_parameter_is_named_with_the_known_ones(families: dict, reason: str) -> None:
    with pytest.raises(InvalidFamilyParams) as refused:
        check_family_params(load_settings(models={"families": families}))
    assert str(refused.value).startswith(reason), str(refused.value)


def test_the_command_line_refuses_a_bad_family_parameter_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("models:\n  families:\n    xgboost:\n      params:\n        max_dept: 4\n")
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--version", "v", "--config", str(config)],
                                env={"BSE_MODELS_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: models.families.xgboost.params: family 'xgboost' has no "
                                                   "parameter 'max_dept'; known: "), result.output


def test_the_command_line_refuses_a_broken_rule_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("window:\n  retain_candles: 100\n")
    result = CliRunner().invoke(app, ["models", "list", "--config", str(config)], env={"BSE_MODELS_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "window.retain_candles is 100: it must be above 192" in lines[0], result.output
