"""Where the champion/challenger test keeps its evidence in Redis, and what a reader makes of it.

The one home of the key layout that :class:`~bse_predict.monitoring.challenger.ChallengerWatch` writes
and the dashboard reads (pure: names and decoding, no client):

- ``{prefix}bse:challenger:{champion|challenger}``: the evidence hash of a version pair while the
  challenger (the newer version) is the shadow; with ``:live`` after it, the fresh test that watches
  the challenger live after its promotion, the old champion in shadow beside it. Fields: ``pairs``,
  ``sum_x`` and ``better:i`` / ``worse:i``, the log wealth per bet of
  :data:`~bse_predict.monitoring.sequential.BETS` (:class:`~bse_predict.monitoring.sequential.Evidence`);
- the same key with ``:decided``: the verdict, once one worker reported it (``SET NX``);
- the same key with ``:staged:{symbol}`` and ``:token:{uuid}``: the pairs waiting for their horizon and
  the once-only tokens of the writer's scripts (not evidence yet).

Which version is the challenger needs the manifests' creation times; the control state only says which
is live and which is the shadow. A live/shadow pair has two possible keys, one per phase
(:func:`candidate_keys`): the shadow is the newer (``{live|shadow}``), or the live one is, promoted and
watched (``{shadow|live}:live``). A reader looks at both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from bse_predict.monitoring.sequential import BETS, Evidence, e_values, threshold

__all__ = ["ChallengerStanding", "evidence_prefix", "evidence_key", "candidate_keys", "evidence_from_fields",
           "standing"]


class ChallengerStanding(BaseModel):
    """One version pair's test as it stands: the pairs counted, each side's e-value against the threshold
    (``2 / alpha``), and the verdict a worker reported, if any."""

    model_config = ConfigDict(frozen=True)

    champion: str
    challenger: str
    challenger_stream: Literal["shadow", "live"]
    pairs: int
    mean_difference_nats: float  # mean (loss of champion − loss of challenger), clipped losses; > 0: challenger better
    e_value_better: float  # evidence for "the challenger is better"
    e_value_worse: float  # evidence for "the challenger is worse"
    threshold: float
    max_pairs: int
    decided: str | None  # the verdict reported on control.events, None while the test goes on


def evidence_prefix(topic_prefix: str) -> str:
    return f"{topic_prefix}bse:challenger"


def evidence_key(prefix: str, champion: str, challenger: str, challenger_is_live: bool) -> str:
    """The evidence hash of one version pair in one phase (see the module docstring)."""
    return f"{prefix}:{{{champion}|{challenger}}}" + (":live" if challenger_is_live else "")


def candidate_keys(prefix: str, live: str, shadow: str) -> tuple[tuple[str, str, bool, str], ...]:
    """The two (champion, challenger, challenger is live, key) a live and a shadow version can be tested under."""
    return ((live, shadow, False, evidence_key(prefix, live, shadow, False)),
            (shadow, live, True, evidence_key(prefix, shadow, live, True)))


def evidence_from_fields(fields: Mapping[str, float]) -> Evidence:
    """The evidence a hash's fields hold (a field not written yet is 0)."""
    return Evidence(pairs=round(fields.get("pairs", 0.0)), sum_x=fields.get("sum_x", 0.0),
                    log_wealth_better=tuple(fields.get(f"better:{i}", 0.0) for i in range(len(BETS))),
                    log_wealth_worse=tuple(fields.get(f"worse:{i}", 0.0) for i in range(len(BETS))))


def standing(champion: str, challenger: str, challenger_is_live: bool, evidence: Evidence, decided: str | None,
             alpha: float, loss_clip_nats: float, max_pairs: int) -> ChallengerStanding:
    """What the page shows of one pair's evidence."""
    better, worse = e_values(evidence)
    return ChallengerStanding(champion=champion, challenger=challenger,
                              challenger_stream="live" if challenger_is_live else "shadow", pairs=evidence.pairs,
                              mean_difference_nats=evidence.mean_difference * loss_clip_nats, e_value_better=better,
                              e_value_worse=worse, threshold=threshold(alpha), max_pairs=max_pairs, decided=decided)
