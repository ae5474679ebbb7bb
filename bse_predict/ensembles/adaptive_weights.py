"""Live adaptive re-weighting of an ensemble served member by member (``worker.ensemble.adaptive``).

Every live prediction of such an ensemble leaves its members' probabilities in
Redis (one hash per version, field ``prediction id|target``, float64 bytes)
until its outcome settles. Each settled outcome then moves that version's
weight vector for the target by :func:`bse_predict.ensembles.combiners.hedge_update`, the
arithmetic ``evaluate`` scores as ``ensemble_adaptive``: every member's weight (the climatology
member's too, when the combination has one: its shares stand in for its answer)
times exp(−rate · its log loss on the outcome), floored so that no member
vanishes for good. Outcomes are applied in the predictions' open-time order.

Several workers settle different symbols and share one vector per version and
target: each update reads, changes and writes the vector under ``WATCH``
(retried when another worker wrote in between), so no outcome is lost or
counted twice, and the member probabilities are deleted in the same
transaction. The serving side (:class:`bse_predict.ensembles.member_runner.ServedEnsemble`)
reads the in-memory copy through :meth:`AdaptiveWeights.current`; it is
refreshed from Redis after every batch, so a worker also follows the others'
updates. A version never updated serves its fitted weights.

The inference thread reads that copy while the event loop moves it: the copy
is an immutable snapshot (a read-only mapping of read-only arrays) that the
event loop replaces whole, one assignment per change, so a batch never sees a
vector half written or one target's update without the others of the same step.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from configs.settings import Settings
from bse_predict.ensembles.combiners import hedge_update, with_climatology
from bse_predict.ensembles.member_runner import ServedEnsemble, load_model_set
from bse_predict.errors import ManifestError
from bse_predict.serving.manifest import MANIFEST_NAME, CombinerRecord, load_manifest
from bse_predict.serving.servable import check_servable
from bse_predict.monitoring.outcomes import Settlement
from bse_predict.serving.model_set import Predictor
from bse_predict.candles.schema import Prediction

__all__ = ["AdaptiveWeights", "ADAPTIVE_STRATEGIES", "load_served", "load_served_version"]

log = logging.getLogger(__name__)

ADAPTIVE_STRATEGIES = ("weighted", "dynamic")
"""The strategies whose weight vector is the one re-weighted (regime and stacking have others)."""
_RETRIES = 20
_NONE_LEARNT: Mapping[str, np.ndarray] = MappingProxyType({})
_DAY_MS = 86_400_000


class AdaptiveWeights:
    """See the module docstring. :meth:`register` a served version, :meth:`attach` a Redis client;
    the candle agent calls :meth:`record` after publishing and the outcome resolver
    :meth:`on_settled` (it is an :class:`~bse_predict.monitoring.resolver.OutcomeListener`)."""

    def __init__(self, settings: Settings) -> None:
        self._prefix = f"{settings.topic_prefix}adaptive"
        self._members_ttl_s = settings.worker.ensemble.members_retain_hours * 3600
        self._combiners: dict[str, dict[str, CombinerRecord]] = {}
        self._weights: Mapping[str, Mapping[str, np.ndarray]] = MappingProxyType({})
        """version -> {target: weights}: the snapshot the inference thread reads, replaced whole."""
        self._client: aioredis.Redis | None = None
        self.updates = 0
        """Outcomes applied by this process."""

    # ------------------------------------------------------------ serving side
    def register(self, version: str, combiners: dict[str, CombinerRecord]) -> None:
        for target, combiner in combiners.items():
            if combiner.strategy not in ADAPTIVE_STRATEGIES:
                raise ValueError(f"version {version} target {target} combines with {combiner.strategy!r}; live "
                                 f"re-weighting needs one of {ADAPTIVE_STRATEGIES} (set the ensemble's strategy)")
        self._combiners[version] = combiners

    def current(self, version: str) -> Mapping[str, np.ndarray]:
        """The version's live weights by target, one snapshot (a target not there: its fitted ones apply)."""
        return self._weights.get(version, _NONE_LEARNT)

    def _swap_in(self, version: str, updated: Mapping[str, np.ndarray]) -> None:
        """Replace the snapshot with one that has ``version``'s ``updated`` targets (read-only copies) on
        top: one assignment."""
        if not updated:
            return
        targets = dict(self._weights.get(version, _NONE_LEARNT))
        for target, vector in updated.items():
            frozen = np.array(vector, dtype=np.float64)
            frozen.setflags(write=False)
            targets[target] = frozen
        self._weights = MappingProxyType({**self._weights, version: MappingProxyType(targets)})

    def attach(self, client: aioredis.Redis) -> None:
        self._client = client

    def _members_key(self, version: str, open_time_ms: int) -> str:
        """One hash per version and candle day: a day's hash expires once nothing is written to it, which
        takes the member probabilities of predictions that never settle with it."""
        return f"{self._prefix}:{version}:members:{open_time_ms // _DAY_MS}"

    def _weights_key(self, version: str) -> str:
        return f"{self._prefix}:{version}:weights"

    async def record(self, predictions: Sequence[Prediction], members: dict[str, dict[str, np.ndarray]]) -> None:
        """Keep the member probabilities ({prediction id: {target: float[M, 3]}}) of these live
        predictions until they settle, and pull the vectors other workers have moved."""
        client = self._require_client()
        fields: dict[str, dict[str, bytes]] = defaultdict(dict)
        for prediction in predictions:
            key = self._members_key(prediction.model.version, prediction.open_time)
            for target, probs in members.get(prediction.id, {}).items():
                fields[key][f"{prediction.id}|{target}"] = np.asarray(probs, np.float64).tobytes()
        async with client.pipeline(transaction=False) as pipe:
            for key, mapping in fields.items():
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                pipe.expire(key, self._members_ttl_s)
            versions = list(self._combiners)
            for version in versions:
                pipe.hgetall(self._weights_key(version))
            replies = await pipe.execute()
        for version, stored in zip(versions, replies[2 * len(fields):], strict=True):
            self._swap_in(version, self._decoded(stored))

    async def refresh(self) -> None:
        """Pull every registered version's vector (a restarted worker serves them from its first batch)."""
        client = self._require_client()
        for version in list(self._combiners):
            self._swap_in(version, self._decoded(await client.hgetall(self._weights_key(version))))

    @staticmethod
    def _decoded(stored: dict[bytes, bytes]) -> dict[str, np.ndarray]:
        return {target.decode(): np.asarray(orjson.loads(raw), dtype=np.float64) for target, raw in stored.items()}

    # ------------------------------------------------------------ outcome side
    async def on_settled(self, settlements: Sequence[Settlement]) -> None:
        by_version: dict[str, list[Settlement]] = defaultdict(list)
        for s in settlements:
            if s.pending.stream == "live" and s.pending.model.version in self._combiners:
                by_version[s.pending.model.version].append(s)
        for version, items in by_version.items():
            await self._apply(version, sorted(items, key=lambda s: (s.pending.open_time, s.pending.symbol)))

    async def _apply(self, version: str, items: list[Settlement]) -> None:
        client = self._require_client()
        weights_key = self._weights_key(version)
        by_key: dict[str, list[str]] = defaultdict(list)
        for s in items:
            by_key[self._members_key(version, s.pending.open_time)].append(f"{s.pending.prediction_id}|{s.pending.target}")
        for _ in range(_RETRIES):
            async with client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(weights_key)
                    stored = await pipe.hgetall(weights_key)
                    found: dict[tuple[str, str], bytes | None] = {}
                    for key, fields in by_key.items():
                        found.update(zip(((key, f) for f in fields), await pipe.hmget(key, fields), strict=True))
                    raw_members = [found[(self._members_key(version, s.pending.open_time),
                                          f"{s.pending.prediction_id}|{s.pending.target}")] for s in items]
                    weights = {t.decode(): np.asarray(orjson.loads(v), np.float64) for t, v in stored.items()}
                    applied = 0
                    for settlement, raw in zip(items, raw_members, strict=True):
                        if raw is None:  # recorded by a worker that died before it, or already applied
                            continue
                        target = settlement.pending.target
                        combiner = self._combiners[version][target]
                        probs = with_climatology(np.frombuffer(raw, dtype=np.float64).reshape(
                            len(combiner.members), 1, 3), combiner.climatology)[:, 0]
                        start = weights.get(target, np.asarray(combiner.weights, np.float64))
                        weights[target] = hedge_update(start, probs, settlement.label, combiner.adaptive_rate,
                                                       combiner.weight_floor)
                        applied += 1
                    pipe.multi()
                    if applied:
                        pipe.hset(weights_key, mapping={t: orjson.dumps(w.tolist()) for t, w in weights.items()})
                    for key, fields in by_key.items():
                        pipe.hdel(key, *fields)
                    await pipe.execute()
                except WatchError:
                    continue
            self._swap_in(version, weights)
            self.updates += applied
            return
        log.error("adaptive weights of %s: %d outcomes not applied, the vector kept changing under %d retries",
                  version, len(items), _RETRIES)

    def _require_client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("AdaptiveWeights has no Redis client: attach() one first")
        return self._client


def load_served(settings: Settings, version: str, adaptive: AdaptiveWeights | None) -> Predictor:
    """One version as the worker serves it (:func:`bse_predict.ensembles.member_runner.load_model_set`), its
    ensemble registered for live re-weighting when ``adaptive`` is given; a version whose served model
    training marked not servable is refused (:mod:`bse_predict.serving.servable`)."""
    check_servable(load_manifest(settings.models_dir / version, settings.model_signing_secret))
    served = load_model_set(settings.models_dir / version, settings.worker.ensemble,
                            live_weights=adaptive.current if adaptive is not None else None,
                            signing_key=settings.model_signing_secret)
    if adaptive is not None and isinstance(served, ServedEnsemble):
        adaptive.register(served.version, served.combiners)
    return served


def load_served_version(settings: Settings, version: str, adaptive: AdaptiveWeights | None = None) -> Predictor:
    """Load, verify (manifest, files, sha256, feature definitions) and warm up one version's model set
    (an ensemble member by member in that mode, registered for live re-weighting with ``adaptive``)."""
    if not (settings.models_dir / version / MANIFEST_NAME).is_file():
        raise ManifestError(f"unknown version {version!r}: no {MANIFEST_NAME} in {settings.models_dir}")
    model_set = load_served(settings, version, adaptive)
    model_set.warm_up((1, 16))  # type: ignore[attr-defined]
    return model_set
