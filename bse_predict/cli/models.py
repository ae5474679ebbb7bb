"""``bse-predict models``: the model registry in BSE_MODELS_DIR (list, show, sign, migrate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bse_predict.cli.shared import ConfigOption, check_version_name, command_settings, console, errors, one_line_errors

__all__ = ["models_app"]

models_app = typer.Typer(help="The model registry in BSE_MODELS_DIR.", no_args_is_help=True)


@models_app.command("list")
@one_line_errors
def models_list(config: ConfigOption = None) -> None:
    """Every version in BSE_MODELS_DIR, oldest first."""
    from bse_predict.serving.manifest import list_versions

    settings = command_settings(config)
    versions = list_versions(settings.models_dir)
    if not versions:
        console.print(f"no versions in {settings.models_dir}")
    for m in versions:
        console.print(f"{m.version:<24} {m.created_at:%Y-%m-%d %H:%M}  {m.served_model:<16} targets {','.join(f'{t:g}%' for t in m.targets_pct)}")


@models_app.command("show")
@one_line_errors
def models_show(version: str, config: ConfigOption = None) -> None:
    """The manifest of one version, then whether it may serve and why (training's verdict per model and target)."""
    from bse_predict.serving.changelog import changelog_lines
    from bse_predict.serving.manifest import load_manifest
    from bse_predict.serving.servable import servable_problem
    from bse_predict.training.servable_gate import describe

    settings = command_settings(config)
    manifest = load_manifest(settings.models_dir / version)
    console.print_json(manifest.model_dump_json(exclude={"changelog"}))
    for line in changelog_lines(manifest.changelog):
        console.print(line, markup=False, highlight=False)
    problem = servable_problem(manifest)
    console.print(f"servable: {'no, the worker refuses this version' if problem else 'yes'} (served model "
                  f"{manifest.served_model})", markup=False, highlight=False)
    for entry in manifest.models:
        console.print(f"  {describe(entry)}", markup=False, highlight=False)


@models_app.command("sign")
@one_line_errors
def models_sign(version: str, config: ConfigOption = None) -> None:
    """Sign a version's manifest with BSE_MODEL_SIGNING_SECRET (HMAC-SHA256), once its files check out."""
    from bse_predict.serving.manifest import sign_version

    settings = command_settings(config)
    if settings.model_signing_secret is None:
        raise ValueError("BSE_MODEL_SIGNING_SECRET is not set: there is no secret to sign with")
    check_version_name(version)
    sign_version(settings.models_dir / version, settings.model_signing_secret)
    console.print(f"signed {version} (HMAC-SHA256 of its manifest)", markup=False, highlight=False)


@models_app.command("migrate")
@one_line_errors
def models_migrate(
    path: Annotated[Path, typer.Argument(help="A folder of legacy rf_{SYMBOL}_{pct:.3f}_model.pkl files, or one file.")],
    version: Annotated[str | None, typer.Option("--version", help="The new version's name (default legacy-<time>).")] = None,
    serve: Annotated[str | None, typer.Option("--serve", help="The symbol whose models serve every symbol "
                                                             "(default BTCUSDT when present).")] = None,
    config: ConfigOption = None,
) -> None:
    """Convert the previous system's pickled forests into a registry version (ONNX, verified, originals kept)."""
    from bse_predict.training.migrate import migrate_legacy

    settings = command_settings(config)
    done = migrate_legacy(path, settings, version, serve, progress=lambda m: errors.print(m, markup=False))
    console.print(f"migrated {path} to {done}", markup=False, highlight=False)
