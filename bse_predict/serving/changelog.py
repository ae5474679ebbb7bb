"""The registry changelog: what a new version changes against the previous one, metrics side by side.

"Previous" is the newest version in the registry when the new one is made
(the one the worker would have served). The changelog lands in the new
manifest (``Manifest.changelog``); ``bse-predict models show V`` prints it.
"""

from __future__ import annotations

from pathlib import Path

from bse_predict.errors import ManifestError
from bse_predict.serving.manifest import Changelog, Manifest, MetricChange, list_versions

__all__ = ["build_changelog", "with_changelog", "changelog_lines"]

# Metrics worth a line in `models show` (all are kept in the manifest).
_HEADLINE = ("log_loss", "brier", "brier_skill", "accuracy", "auc_up_vs_down")


def _set_change(label: str, before: set[str], after: set[str]) -> list[str]:
    lines = [f"{label} added: {name}" for name in sorted(after - before)]
    return lines + [f"{label} removed: {name}" for name in sorted(before - after)]


def _what_changed(new: Manifest, old: Manifest) -> list[str]:
    changes: list[str] = []
    for field, label in (("served_model", "served model"), ("timeframe", "timeframe"), ("horizon_hours", "horizon hours"),
                         ("targets_pct", "targets (%)"), ("min_history", "min history"),
                         ("feature_spec_hash", "feature definitions (hash)")):
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            changes.append(f"{label}: {before} -> {after}")
    changes += _set_change("model", {m.name for m in old.models}, {m.name for m in new.models})
    changes += _set_change("training data", set(old.data_span), set(new.data_span))
    for name in sorted(set(old.data_span) & set(new.data_span)):
        a, b = old.data_span[name], new.data_span[name]
        if (a.start_ms, a.end_ms, a.rows) != (b.start_ms, b.end_ms, b.rows):
            changes.append(f"training data {name}: {a.rows} rows to {b.rows} rows (span {a.start_ms}..{a.end_ms} -> "
                           f"{b.start_ms}..{b.end_ms})")
    for library in sorted(set(old.library_versions) | set(new.library_versions)):
        before, after = old.library_versions.get(library), new.library_versions.get(library)
        if before != after:
            changes.append(f"{library}: {before} -> {after}")
    if (old.legacy is None) != (new.legacy is None):
        changes.append("migrated from the legacy format" if new.legacy else "trained here (the previous one was migrated)")
    return changes or ["no change in models, data, features or libraries (a retrain)"]


def build_changelog(new: Manifest, previous: Manifest | None) -> Changelog:
    """The changelog of ``new`` against ``previous`` (None: the first version)."""
    if previous is None:
        return Changelog(previous_version=None, changes=("first version in this registry",))
    metrics: dict[str, dict[str, MetricChange]] = {}
    for key in sorted(set(new.metrics) | set(previous.metrics)):
        now, then = new.metrics.get(key, {}), previous.metrics.get(key, {})
        metrics[key] = {
            name: MetricChange(previous=then.get(name), current=now.get(name),
                               delta=None if name not in now or name not in then else now[name] - then[name])
            for name in sorted(set(now) | set(then))
        }
    return Changelog(previous_version=previous.version, changes=tuple(_what_changed(new, previous)), metrics=metrics)


def with_changelog(manifest: Manifest, models_dir: Path) -> Manifest:
    """``manifest`` with its changelog against the newest other version in ``models_dir``."""
    try:
        others = [m for m in list_versions(models_dir) if m.version != manifest.version]
    except ManifestError as exc:
        return manifest.model_copy(update={"changelog": Changelog(
            previous_version=None, changes=(f"previous version unknown: {exc}",))})
    return manifest.model_copy(update={"changelog": build_changelog(manifest, others[-1] if others else None)})


def changelog_lines(changelog: Changelog | None) -> list[str]:
    """Lines for ``models show``: the changes, then the headline metrics beside the previous version's."""
    if changelog is None:
        return ["changelog: none recorded (made before changelogs existed)"]
    lines = [f"changelog against {changelog.previous_version or '(none)'}:"]
    lines += [f"  - {change}" for change in changelog.changes]
    for key, metrics in changelog.metrics.items():
        shown = [f"{name} {_fmt(m.previous)} -> {_fmt(m.current)}" + (f" ({m.delta:+.4f})" if m.delta is not None else "")
                 for name, m in metrics.items() if name in _HEADLINE]
        if shown:
            lines.append(f"  {key}: " + "; ".join(shown))
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
