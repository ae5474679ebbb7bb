"""Fixtures shared by the suites: real data, a small trained version, isolated topics.

Integration tests use the real Kafka and Redis of ``bse-predict services up``
(``make test`` starts them). When they do not answer, the tests fail with
that reason: they never skip and never fake the servers.

A test that asks for the real candles (``futures_series``) or a version trained on them
(``trained_version``, ``ensemble_models``) is marked ``slow`` here, wherever it lives: it reads
``../shared/data`` and takes seconds, so ``make test-fast`` leaves it out and ``make test`` runs it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from configs.settings import Settings, load_settings
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.connections.clients import connect_redis_sync, redacted_url
from bse_predict.connections.topics import delete_topics_under

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "candles"
FUTURES = SHARED_DATA / "binance-futures"

# The fixtures below that read ../shared/data (directly or by training on it): their users are slow.
REAL_DATA_FIXTURES = frozenset({"futures_series", "trained_version", "ensemble_models"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def futures_series() -> dict[str, CandleSeries]:
    if not FUTURES.is_dir():
        pytest.fail(f"real candles are missing: {FUTURES} (the repo expects ../shared beside it)")
    return {s.symbol: s for s in read_candle_files([FUTURES])}


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def services(base_settings: Settings) -> Settings:
    """The real services answer, or every integration test fails with the reason."""
    try:
        connect_redis_sync(base_settings, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {redacted_url(base_settings.redis_url)} does not answer ({exc}); run `bse-predict services up`")
    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=base_settings.kafka_bootstrap, request_timeout_ms=5000)
        await admin.start()
        await admin.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), 15))
    except Exception as exc:  # any failure to reach the broker is the same verdict
        pytest.fail(f"Kafka at {base_settings.kafka_bootstrap} does not answer ({exc!r}); run `bse-predict services up`")
    return base_settings


@pytest.fixture
def isolated(services: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings with a fresh topic and Redis key prefix, so tests never see each other's data. The
    test's topics and keys are deleted after it: a suite leaves thousands of partitions otherwise,
    and a broker that kept them all ran out of file handles after a few runs."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = services.model_copy(update={"topic_prefix": prefix})
    yield settings
    asyncio.run(delete_topics_under(settings, prefix))
    client = connect_redis_sync(settings)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.unlink(*keys)


# A small RandomForest alone: the stream tests are about the stream, and the family suite covers the rest.
TRAINING_OVERRIDES = {
    "training": {"max_rows_per_symbol": 2500, "holdout_fraction": 0.2},
    "models": {"served": "random_forest", "families": {
        **{name: {"enabled": False} for name in load_settings().models.families},
        "random_forest": {"enabled": True,
                          "params": {"n_estimators": 24, "max_depth": 6, "min_samples_leaf": 40, "seed": 3}}}},
}


@pytest.fixture(scope="session")
def trained_version(tmp_path_factory: pytest.TempPathFactory, futures_series: dict[str, CandleSeries]) -> Settings:
    """A small real version (RandomForest on the newest 2,500 h of BTC, ETH, SOL futures)."""
    from bse_predict.training.train import train_version

    models_dir = tmp_path_factory.mktemp("models")
    settings = load_settings(models_dir=str(models_dir), **TRAINING_OVERRIDES)
    train_version(list(futures_series.values()), settings, "v-test", show_progress=False)
    return settings


ENSEMBLE_VERSION = "v-ens"


@pytest.fixture(scope="session")
def ensemble_models(tmp_path_factory: pytest.TempPathFactory, futures_series: dict[str, CandleSeries]) -> Path:
    """A models folder with ``v-ens``: a small ensemble (RandomForest + HMM regimes, regime weights)
    on the newest 1,500 h of BTC, ETH, SOL futures."""
    from bse_predict.training.train import train_version

    models_dir = tmp_path_factory.mktemp("ensemble-models")
    families = {name: {"enabled": False} for name in load_settings().models.families}
    families["ensemble"] = {"enabled": True, "params": {
        "members": ["random_forest", "hmm_regime"], "strategy": "regime", "regime_min_rows": 150,
        "member_params": {"random_forest": {"n_estimators": 16, "max_depth": 5, "min_samples_leaf": 40, "seed": 3},
                          "hmm_regime": {"n_states": 3, "n_iter": 10, "seed": 3}}}}
    settings = load_settings(models_dir=str(models_dir), training={"max_rows_per_symbol": 1500},
                             models={"served": "ensemble", "families": families})
    train_version(list(futures_series.values()), settings, ENSEMBLE_VERSION, show_progress=False)
    return models_dir
