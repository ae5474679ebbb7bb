"""One package per concept, each a pure core with thin adapters beside it (../shared/STYLE.md).

- A core module imports no Kafka, Faust, Redis or HTTP client and reads no clock
  (the time is passed in), except the few listed in ``CLOCK_READERS`` with the reason.
- An adapter imports, from other concepts, only their cores and the shared
  connections (``bse_predict.connections``); only the composition roots (the Faust
  app, the worker's start-up, the alerts service's start-up, the commands, the backtest's
  replay of the worker's path, the benchmark, the retrain run and its scheduler) wire adapters
  of several concepts together.
- ``configs`` (the settings) imports nothing of the project.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bse_predict"
IO_LIBRARIES = {"faust", "aiokafka", "kafka", "redis", "aiohttp", "httpx", "requests", "websockets", "socket",
                "subprocess"}
CLOCK_CALLS = {("time", "time"), ("time", "time_ns"), ("time", "monotonic"), ("time", "perf_counter"),
               ("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}

ADAPTERS = {
    "alerts": {"explanations", "lease", "run", "service", "store", "telegram"},
    "archive": {"run", "store"},
    "backtest": {"command", "predictions"},
    "connections": {"clients", "consumer_lag", "key_expiry", "log_repeats", "partition_range", "reliable_producer", "topics",
                    "transient"},
    "control": {"plane", "reporting", "sender", "state_log", "state_store"},
    "ensembles": {"adaptive_weights"},
    "ingest": {"candle_sink", "metrics", "rest_client", "service", "stream_connection", "topic_tail"},
    "monitoring": {"challenger", "challenger_store", "drift_counts", "drift_monitor", "hash_sums", "live_outcomes", "metrics", "outcome_store", "prediction_history",
                   "resolver"},
    "stream": {"app", "batch_guard", "bench", "bench_inference", "bench_load", "worker_parts", "processor", "publisher", "rebuild", "relay", "replay", "run",
               "stage_times", "stall_watch", "symbol_registry", "window_store"},
    "services": {"debian_packages", "local_cluster", "local_kafka", "local_redis", "local_secure", "local_service",
                 "local_tls", "processes", "stack"},
    "retrain": {"ledger", "publisher", "run", "scheduler"},
    "cli": {"commands", "shared", "services", "training", "stream", "alerts", "archive", "models", "control", "demo",
            "ingest", "retrain", "dashboard", "tuning", "__main__", "__init__"},
    "dashboard": {"access", "consumer_lag", "feed", "operations", "run", "web"},
}
"""Modules that do IO or read the clock, by package; every other module of ``bse_predict`` is a core module."""

COMPOSITION_ROOTS = {"stream.app", "stream.worker_parts", "stream.run", "stream.bench", "alerts.run", "cli.commands",
                     "cli.shared", "cli.services", "cli.training", "cli.stream", "cli.alerts", "cli.archive", "cli.models",
                     "cli.control", "cli.demo", "cli.ingest", "cli.retrain", "cli.tuning", "backtest.predictions", "backtest.command",
                     "retrain.run", "retrain.scheduler", "cli.dashboard", "dashboard.run"}
"""Where adapters of several concepts are wired together."""

CLOCK_READERS = {
    "serving.router": "measures each model call against the breaker's latency budget",
    "ensembles.member_runner": "gives each member its deadline",
    "training.train": "reports how long training took",
    "training.migrate": "stamps the migrated version's creation time",
    "evaluation.evaluate": "reports how long the evaluation took",
    "evaluation.fold_predictions": "reports how long each fit took",
}
"""Core modules that read the clock, and why."""


def _modules() -> dict[str, Path]:
    return {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path for path in PACKAGE.rglob("*.py")}


def _is_adapter(name: str) -> bool:
    package, _, module = name.rpartition(".")
    return module in ADAPTERS.get(package, set())


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _clock_calls(path: Path) -> set[str]:
    calls = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (node.value.id, node.attr) in CLOCK_CALLS:
            calls.add(f"{node.value.id}.{node.attr}")
    return calls


def _project_module(imported: str) -> str | None:
    """``bse_predict.serving.router`` -> ``serving.router``; a package import names its ``__init__``."""
    if not imported.startswith("bse_predict."):
        return None
    name = imported.removeprefix("bse_predict.")
    return name if (PACKAGE / (name.replace(".", "/") + ".py")).exists() else f"{name}.__init__"


CORES = sorted(name for name in _modules() if not _is_adapter(name))
ADAPTER_MODULES = sorted(name for name in _modules() if _is_adapter(name) and name not in COMPOSITION_ROOTS)


def test_every_listed_adapter_exists() -> None:
    listed = {f"{package}.{module}" for package, modules in ADAPTERS.items() for module in modules}
    assert listed <= set(_modules()), sorted(listed - set(_modules()))
    assert set(CLOCK_READERS) <= set(CORES) and COMPOSITION_ROOTS <= set(_modules())


@pytest.mark.parametrize("name", CORES)
def test_a_core_module_does_no_io_and_reads_no_clock(name: str) -> None:
    path = _modules()[name]
    io = sorted({i.split(".")[0] for i in _imports(path)} & IO_LIBRARIES)
    assert not io, f"{name} is a core module but imports {io}: move the IO into an adapter"
    clock = _clock_calls(path)
    assert not clock or name in CLOCK_READERS, f"{name} reads the clock ({sorted(clock)}): pass the time in"


@pytest.mark.parametrize("name", CORES)
def test_a_core_module_imports_no_adapter(name: str) -> None:
    adapters = sorted(m for m in map(_project_module, _imports(_modules()[name])) if m and _is_adapter(m))
    assert not adapters, f"{name} is a core module but imports the adapters {adapters}"


@pytest.mark.parametrize("name", ADAPTER_MODULES)
def test_an_adapter_imports_other_concepts_only_through_their_core(name: str) -> None:
    package = name.split(".")[0]
    crossing = sorted(m for m in map(_project_module, _imports(_modules()[name]))
                      if m and _is_adapter(m) and m.split(".")[0] not in {package, "connections"})
    assert not crossing, f"{name} imports adapters of other concepts: {crossing}"


def test_settings_import_nothing_of_the_project() -> None:
    for path in (ROOT / "configs").rglob("*.py"):
        assert not {i for i in _imports(path) if i.split(".")[0] == "bse_predict"}, path


def test_the_worker_imports_no_training_library() -> None:
    """A serving install has no scikit-learn, pandas, xgboost, LightGBM or TensorFlow: the worker's
    import path must not need them."""
    probe = ("import sys, bse_predict.cli, bse_predict.stream.run, bse_predict.stream.app, bse_predict.stream.bench, "
             "bse_predict.serving.onnx_runner; "
             "print(sorted(m for m in ('sklearn', 'pandas', 'xgboost', 'lightgbm', 'tensorflow', 'keras', "
             "'hmmlearn', 'matplotlib', 'skl2onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stdout
