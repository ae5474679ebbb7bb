"""Start a worker process: pick the served version, make sure the topics exist, run Faust."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import faust

from configs.settings import Settings
from bse_predict.serving.servable import check_servable, newest_servable_version
from bse_predict.serving.model_set import Predictor
from bse_predict.ensembles.adaptive_weights import AdaptiveWeights, load_served
from bse_predict.stream.app import create_app, faust_settings
from bse_predict.stream.worker_parts import WorkerParts
from bse_predict.connections.log_repeats import quiet_repeats
from bse_predict.connections.topics import ensure_topics

__all__ = ["load_predictor", "run_worker", "run_relay", "Engine"]

log = logging.getLogger(__name__)

Engine = Literal["onnx", "native"]


def load_predictor(settings: Settings, version: str | None = None, engine: Engine = "onnx",
                   adaptive: AdaptiveWeights | None = None) -> Predictor:
    """The version to serve: the one asked for, else the newest servable one in ``models_dir``."""
    chosen = version or newest_servable_version(settings.models_dir)
    version_dir = settings.models_dir / chosen
    if engine == "native":
        from bse_predict.serving.native_runner import NativeModelSet

        native = NativeModelSet.load(version_dir, settings.model_signing_secret)
        check_servable(native.manifest)
        return native
    model_set = load_served(settings, chosen, adaptive)
    model_set.warm_up((1, 16, 64, settings.worker.batch_max_events))  # type: ignore[attr-defined]
    log.info("version %s loaded; providers per target: %s", chosen, model_set.providers())  # type: ignore[attr-defined]
    return model_set


def run_worker(settings: Settings, version: str | None = None, engine: Engine = "onnx", loglevel: str = "info") -> None:
    """Blocks until the worker is stopped (SIGTERM/SIGINT)."""
    adaptive = None
    if settings.worker.ensemble.adaptive:
        if not settings.outcomes.enabled:
            raise ValueError("worker.ensemble.adaptive re-weights from live outcomes: it needs outcomes.enabled")
        adaptive = AdaptiveWeights(settings)
    predictor = load_predictor(settings, version, engine, adaptive)
    asyncio.run(ensure_topics(settings))
    conf = faust_settings(settings, settings.worker.app_id)
    parts = WorkerParts.build(settings, predictor, str(conf["id"]), str(conf["broker_client_id"]), adaptive)
    app = create_app(settings, parts, conf)
    quiet_repeats("aiokafka")  # a broker outage: one refused-connection line per 30 s, not several a second
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()


def run_relay(settings: Settings, loglevel: str = "warn") -> None:
    """The benchmark's floor (``bse_predict.stream.relay``); blocks until stopped."""
    from bse_predict.stream.relay import RELAY_OUTPUT, create_relay_app

    asyncio.run(ensure_topics(settings, extra=(settings.topic(RELAY_OUTPUT),)))
    worker = faust.Worker(create_relay_app(settings), loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
