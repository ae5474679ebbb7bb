"""The transport settings and the one factory that turns them into client arguments."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import faust
import pytest
from pydantic import SecretStr, ValidationError

from configs.settings import KafkaSecurity, RedisTls, Settings, load_settings
from bse_predict.connections.clients import (
    client_environment,
    faust_broker_options,
    kafka_options,
    redacted_url,
    redis_tls_options,
)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55word-that-must-never-show"
SCRAM = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "bse",
         "sasl_password": PASSWORD}


def test_the_contract_environment_names_fill_the_kafka_and_redis_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BSE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("BSE_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("BSE_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("BSE_KAFKA_SSL_CAFILE", "/etc/ca.pem")
    monkeypatch.setenv("BSE_REDIS_URL", f"rediss://bse:{PASSWORD}@cache:6380/0")
    monkeypatch.setenv("BSE_REDIS_SSL_CAFILE", "/etc/redis-ca.pem")
    settings = load_settings()
    assert settings.kafka.security_protocol == "SASL_SSL" and settings.kafka.sasl_mechanism == "SCRAM-SHA-256"
    assert settings.kafka.sasl_username == "svc" and settings.kafka.ssl_cafile == Path("/etc/ca.pem")
    assert settings.kafka.sasl_password is not None and settings.kafka.sasl_password.get_secret_value() == PASSWORD
    assert settings.redis.ssl_cafile == Path("/etc/redis-ca.pem")
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)


def test_the_environment_beats_a_config_file_inside_a_block(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  security_protocol: SSL\n  ssl_check_hostname: true\n")
    monkeypatch.setenv("BSE_KAFKA_SSL_CHECK_HOSTNAME", "false")
    settings = load_settings(config)
    assert settings.kafka.security_protocol == "SSL" and settings.kafka.ssl_check_hostname is False


@pytest.mark.parametrize("keys", [("kafka", "sasl_password"), ("control_secret",), ("telegram_bot_token",)])
def test_a_secret_in_a_config_file_is_refused(tmp_path: Path, keys: tuple[str, ...]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"{keys[0]}:\n  {keys[1]}: x\n" if len(keys) == 2 else f"{keys[0]}: x\n")
    with pytest.raises(ValueError, match="from the environment only"):
        load_settings(config)


@pytest.mark.parametrize("fields, reason", [
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}, "SASL_PASSWORD"),
    ({"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"}, "needs kafka.sasl_mechanism"),
    ({"security_protocol": "PLAINTEXT", "sasl_username": "u"}, "SASL settings given"),
    ({"security_protocol": "SSL", "ssl_certfile": "/c.pem"}, "go together"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p",
      "ssl_cafile": "/ca.pem"}, "TLS files given"),
    ({"security_protocol": "TLS"}, "security_protocol"),
])
def test_incomplete_kafka_security_is_refused_with_the_reason(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        KafkaSecurity(**fields)  # type: ignore[arg-type]


def test_sasl_ssl_options_verify_the_broker_and_carry_the_credentials() -> None:
    options = kafka_options(Settings(kafka_bootstrap="b1:9096,b2:9096", kafka=KafkaSecurity(**SCRAM)))
    assert options["bootstrap_servers"] == "b1:9096,b2:9096"
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "bse" and options["sasl_plain_password"] == PASSWORD
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_plaintext_options_are_the_bootstrap_alone() -> None:
    assert kafka_options(Settings(kafka_bootstrap="k:9092")) == {"bootstrap_servers": "k:9092",
                                                                "security_protocol": "PLAINTEXT"}


def test_the_faust_app_gets_the_same_credentials() -> None:
    options = faust_broker_options(Settings(kafka_bootstrap="b1:9096", kafka=KafkaSecurity(**SCRAM)))
    credentials = options["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "bse" and credentials.password == PASSWORD
    assert PASSWORD not in repr(credentials)
    ssl_only = faust_broker_options(Settings(kafka=KafkaSecurity(security_protocol="SSL")))["broker_credentials"]
    assert isinstance(ssl_only, faust.SSLCredentials) and ssl_only.protocol.value == "SSL"
    assert "broker_credentials" not in faust_broker_options(Settings())


def test_redis_tls_arguments_only_for_rediss_and_the_certificate_is_always_checked() -> None:
    tls = RedisTls(ssl_cafile=Path("/ca.pem"))
    assert redis_tls_options(tls, "redis://h:6379/0") == {}
    options = redis_tls_options(tls, "rediss://u:p@h:6380/0")
    assert options["ssl_cert_reqs"] == "required" and options["ssl_ca_certs"] == "/ca.pem"
    assert options["ssl_check_hostname"] is True


@pytest.mark.parametrize("query", ["ssl_cert_reqs=none", "ssl_check_hostname=false&db=0", "SSL_CA_CERTS=/x"])
def test_a_redis_url_cannot_turn_tls_checks_off(query: str) -> None:
    """redis-py would let the URL's query override the certificate check the factory asks for."""
    with pytest.raises(ValidationError, match="TLS options come from BSE_REDIS_SSL_"):
        Settings(redis_url=SecretStr(f"rediss://bse:{PASSWORD}@h:6380/0?{query}"))


def test_a_redis_url_of_another_scheme_is_refused_without_showing_it() -> None:
    with pytest.raises(ValidationError, match="must start with redis://") as refused:
        Settings(redis_url=SecretStr(f"http://bse:{PASSWORD}@h:6380/0"))
    assert PASSWORD not in str(refused.value)


@pytest.mark.parametrize("url, shown", [
    (f"rediss://bse:{PASSWORD}@h:6380/0", "rediss://bse:***@h:6380/0"),
    (f"redis://:{PASSWORD}@h/1", "redis://:***@h/1"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("redis://bse:p#ss/wo?rd@h:6380/0", "redis://bse:***@h:6380/0"),  # unencoded: urlsplit sees no password
    (f"redis://{PASSWORD}@h:6380/0", "redis://***@h:6380/0"),
])
def test_a_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted_url(SecretStr(url)) == shown


def test_a_child_process_environment_rebuilds_the_same_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(kafka_bootstrap="b:9096", redis_url=SecretStr(f"rediss://bse:{PASSWORD}@h:6380/0"),
                        kafka=KafkaSecurity(**SCRAM, ssl_cafile=Path("/ca.pem"), ssl_check_hostname=False),
                        redis=RedisTls(ssl_cafile=Path("/rca.pem")))
    for name, value in client_environment(settings).items():
        monkeypatch.setenv(name, value)
    rebuilt = load_settings()
    assert rebuilt.kafka == settings.kafka and rebuilt.redis == settings.redis
    assert rebuilt.redis_url.get_secret_value() == settings.redis_url.get_secret_value()
    assert rebuilt.kafka_bootstrap == "b:9096"


_KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
_LOCAL_SERVICES = {"bse_predict/services/local_kafka.py", "bse_predict/services/local_cluster.py", "bse_predict/services/local_secure.py"}


def _client_calls_without_options(path: Path) -> list[int]:
    """Lines where a Kafka client is built without ``**`` arguments (the factory's options)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _KAFKA_CLIENTS:
            if not any(keyword.arg is None for keyword in node.keywords):
                lines.append(node.lineno)
    return lines


def test_every_kafka_client_of_the_project_is_built_from_the_security_settings() -> None:
    """Only the launchers of the local services probe their own brokers with bare clients."""
    offenders = {}
    for package in ("workers", "bse_predict", "models", "export"):
        for path in (ROOT / package).rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            if relative not in _LOCAL_SERVICES and (lines := _client_calls_without_options(path)):
                offenders[relative] = lines
    assert not offenders, f"Kafka clients built without kafka_options(): {offenders}"


def test_no_redis_client_is_built_outside_the_factory() -> None:
    offenders = [str(path.relative_to(ROOT)) for package in ("workers", "models", "export")
                 for path in (ROOT / package).rglob("*.py")
                 if path.name != "connections.py" and "from_url(" in path.read_text(encoding="utf-8")]
    assert not offenders
