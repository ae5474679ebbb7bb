"""Start, stop and report a local Kafka (KRaft: one node or a three-node cluster)
and Redis, without Docker: the API of ``bse-predict services``.

This module holds the public API and the choice of Kafka layout. The lifecycle
every service shares (launching detached, pid files, port checks, waiting for
health, stopping) is in :mod:`bse_predict.services.local_service`; what is
particular to each in :mod:`bse_predict.services.local_kafka` (the single node, and
what every node needs), :mod:`bse_predict.services.local_cluster` (the cluster, and
the calls fault tests make) and :mod:`bse_predict.services.local_redis`.

State, logs and pid files live in ``${BSE_SERVICES_DIR:-./var/services}``
(relative to the current directory). Only loopback addresses are served: a
bootstrap or Redis URL that points elsewhere is someone else's to run.
See docs/services.md.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bse_predict.services.local_service import (
    LocalService,
    Progress,
    ServicesError,
    ServiceState,
    require_local,
    running_pid,
    service_state,
    services_dir,
    start_services,
    stop_services,
)
from configs.settings import Settings

__all__ = [
    "ServiceState",
    "ServicesError",
    "ServicesReport",
    "services_down",
    "services_status",
    "services_up",
]


class ServicesReport(BaseModel):
    """``kafka`` is the single node or the cluster as a whole; ``kafka_brokers`` lists each node."""

    kafka: ServiceState
    redis: ServiceState
    kafka_brokers: tuple[ServiceState, ...]


# ----------------------------------------------------------------- public API


def services_up(
    settings: Settings, *, brokers: int = 1, progress: Progress = print, timeout_s: float = 120
) -> ServicesReport:
    """Start whatever does not answer yet, then wait until all answer.

    ``brokers``: 1 for a single Kafka node, 3 for a three-node cluster
    (:mod:`bse_predict.services.local_cluster`). Every check and one-time setup (ports,
    Java, jars, storage, redis-server) runs before anything is launched, so a
    setup error starts nothing. ``timeout_s`` counts from the launch.
    """
    from bse_predict.services.local_redis import redis_service

    kafka = _claim_kafka_layout(settings, brokers)
    start_services([*kafka, redis_service(settings)], progress=progress, timeout_s=timeout_s)
    return services_status(settings)


def services_down(settings: Settings, *, progress: Progress = print) -> ServicesReport:
    """Stop the services that bse-predict started; anything else is left alone."""
    from bse_predict.services.local_redis import redis_service

    stop_services([*_kafka_services(settings, _recorded_kafka_brokers()), redis_service(settings)], progress)
    return services_status(settings)


def services_status(settings: Settings) -> ServicesReport:
    """Report every service without starting or stopping anything.

    Kafka is reported in the layout of the last ``up`` (single node or cluster).
    """
    from bse_predict.services.local_redis import redis_service

    brokers = tuple(service_state(node) for node in _kafka_services(settings, _recorded_kafka_brokers()))
    kafka = brokers[0] if len(brokers) == 1 else _cluster_state(brokers)
    return ServicesReport(kafka=kafka, redis=service_state(redis_service(settings)), kafka_brokers=brokers)


# -------------------------------------------------------------- Kafka layout


def _kafka_services(settings: Settings, brokers: int) -> list[LocalService]:
    """The Kafka nodes of a layout: the single node (1) or the cluster's nodes (3)."""
    # Imported here, not at the top: they load aiokafka, which a caller importing this module for
    # its error and report types does not need.
    from bse_predict.services.local_cluster import CLUSTER_BROKERS, cluster_services
    from bse_predict.services.local_kafka import kafka_service

    if brokers == 1:
        return [kafka_service(settings)]
    if brokers == CLUSTER_BROKERS:
        return cluster_services(settings)
    raise ServicesError(f"brokers must be 1 or {CLUSTER_BROKERS}, got {brokers}")


def _recorded_kafka_brokers() -> int:
    """The broker count of the last ``up`` in this services dir (1 when none is recorded)."""
    try:
        return int(_layout_path().read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return 1


def _claim_kafka_layout(settings: Settings, brokers: int) -> list[LocalService]:
    """Record ``brokers`` as this services dir's Kafka layout and return its nodes.

    Refused while a Kafka of the other layout that bse-predict started is running:
    both bind the same ports.
    """
    wanted = _kafka_services(settings, brokers)
    for node in wanted:
        require_local(node)
    recorded = _recorded_kafka_brokers()
    if recorded != brokers:
        running = [node.name for node in _kafka_services(settings, recorded) if running_pid(node) is not None]
        if running:
            raise ServicesError(
                f"the local Kafka runs with {recorded} broker(s) ({', '.join(running)}); "
                "run `bse-predict services down` first"
            )
    path = _layout_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{brokers}\n", encoding="utf-8")
    return wanted


def _layout_path() -> Path:
    return services_dir() / "kafka-brokers"


def _cluster_state(brokers: tuple[ServiceState, ...]) -> ServiceState:
    answering = [state for state in brokers if state.healthy]
    return ServiceState(
        name="kafka",
        address=",".join(state.address for state in brokers),
        running=any(state.running for state in brokers),
        healthy=len(answering) == len(brokers),
        pid=None,
        log_path=None,
        detail=f"{len(answering)} of {len(brokers)} brokers answer",
    )

