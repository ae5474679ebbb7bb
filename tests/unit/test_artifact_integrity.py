"""A version is served only as its manifest vouches for it: files inside its own folder, each
with a sha256 checked on the very bytes that are loaded, ONNX graphs that reference nothing
outside themselves, and (with ``BSE_MODEL_SIGNING_SECRET``) a manifest signed under the secret."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import bse_predict.serving.onnx_runner as onnx_runner
from bse_predict.cli import app
from configs.settings import Settings, load_settings
from bse_predict.training.train import train_version
from bse_predict.candles.files import CandleSeries
from bse_predict.errors import ManifestError
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.serving.manifest import MANIFEST_NAME, sha256_of
from bse_predict.serving.native_runner import NativeModelSet
from bse_predict.serving.onnx_runner import ServedModelSet
from tests.conftest import TRAINING_OVERRIDES
from bse_predict.stream.run import load_predictor

SOURCE = "v-test"
SECRET = "a-model-signing-secret-of-32-chars"


def _copy(trained_version: Settings, tmp_path: Path, name: str = SOURCE) -> Path:
    version_dir = tmp_path / "models" / name
    shutil.copytree(trained_version.models_dir / SOURCE, version_dir)
    return version_dir


def _rewrite(version_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the manifest document, then record the sha256 of every file it lists as the files are now."""
    fields = json.loads((version_dir / MANIFEST_NAME).read_text())
    change(fields)
    fields["files_sha256"] = {name: sha256_of(version_dir / name) for name in fields["files_sha256"]}
    (version_dir / MANIFEST_NAME).write_text(json.dumps(fields))


def _served(fields: dict[str, Any], target: str = "1%") -> dict[str, Any]:
    return next(m for m in fields["models"] if m["name"] == fields["served_model"] and m["target"] == target)


def _manifest(version_dir: Path) -> dict[str, Any]:
    return json.loads((version_dir / MANIFEST_NAME).read_text())


# ---------------------------------------------------------------- files inside the folder, all hashed


@pytest.mark.parametrize("where", ["parent", "absolute", "hash_only"])
def test_a_manifest_names_only_files_inside_its_own_folder(trained_version: Settings, tmp_path: Path,
                                                           where: str) -> None:
    version_dir = _copy(trained_version, tmp_path)
    outside = tmp_path / "outside.onnx"
    shutil.copy(version_dir / _served(_manifest(version_dir))["file"], outside)
    name = str(outside) if where == "absolute" else "../../outside.onnx"

    def point_outside(fields: dict[str, Any]) -> None:
        if where != "hash_only":
            _served(fields)["file"] = name
        fields["files_sha256"][name] = ""

    _rewrite(version_dir, point_outside)
    with pytest.raises(ManifestError, match="not a plain relative path inside the version folder"):
        ServedModelSet.load(version_dir)


def test_a_symlink_out_of_the_folder_is_refused(trained_version: Settings, tmp_path: Path) -> None:
    version_dir = _copy(trained_version, tmp_path)
    served = version_dir / _served(_manifest(version_dir))["file"]
    elsewhere = tmp_path / "elsewhere.onnx"
    shutil.move(served, elsewhere)
    served.symlink_to(elsewhere)  # the same bytes, so the same sha256: only the place is wrong
    with pytest.raises(ManifestError, match="resolves outside the version folder"):
        ServedModelSet.load(version_dir)


@pytest.mark.parametrize("field", ["file", "native_file"])
def test_a_file_without_a_sha256_is_refused_not_loaded_unchecked(trained_version: Settings, tmp_path: Path,
                                                                field: str) -> None:
    version_dir = _copy(trained_version, tmp_path)
    _rewrite(version_dir, lambda fields: fields["files_sha256"].pop(_served(fields)[field]))
    with pytest.raises(ManifestError, match="has no sha256 in files_sha256"):
        (ServedModelSet if field == "file" else NativeModelSet).load(version_dir)


def test_a_folder_must_be_named_after_its_version(trained_version: Settings, tmp_path: Path) -> None:
    version_dir = _copy(trained_version, tmp_path, name="v-renamed")
    with pytest.raises(ManifestError, match="folder v-renamed holds version v-test"):
        ServedModelSet.load(version_dir)
    with pytest.raises(ManifestError, match="folder v-renamed holds version v-test"):
        NativeModelSet.load(version_dir)


def test_the_bytes_served_are_the_bytes_checked(trained_version: Settings, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A file swapped for another valid graph after the version was verified is not served."""
    version_dir = _copy(trained_version, tmp_path)
    fields = _manifest(version_dir)
    served, other = version_dir / _served(fields, "1%")["file"], version_dir / _served(fields, "5%")["file"]
    verify = onnx_runner.verify_files

    def verify_then_swap(*args: Any, **kwargs: Any) -> None:
        verify(*args, **kwargs)
        served.write_bytes(other.read_bytes())

    monkeypatch.setattr(onnx_runner, "verify_files", verify_then_swap)
    with pytest.raises(ManifestError, match="sha256"):
        ServedModelSet.load(version_dir)


# ---------------------------------------------------------------- self-contained ONNX graphs


def _linear_graph(domain: str = "", nested: bool = False) -> onnx.ModelProto:
    """features -> MatMul(W) -> Softmax -> probabilities; with ``domain`` one node of that domain
    (inside an ``If`` branch when ``nested``)."""
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(FEATURE_NAMES)])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])
    weights = helper.make_tensor("weights", TensorProto.FLOAT, [len(FEATURE_NAMES), 3],
                                 np.linspace(-0.01, 0.01, 3 * len(FEATURE_NAMES), dtype=np.float32).tobytes(), raw=True)
    nodes = [helper.make_node("MatMul", ["features", "weights"], ["logits"])]
    opsets = [helper.make_opsetid("", 17)]
    if domain and not nested:
        nodes.append(helper.make_node("Gelu", ["logits"], ["mixed"], domain=domain))
        opsets.append(helper.make_opsetid(domain, 1))
    elif domain:
        branch_out = helper.make_tensor_value_info("mixed", TensorProto.FLOAT, [None, 3])
        branch = helper.make_graph([helper.make_node("Gelu", ["logits"], ["mixed"], domain=domain)], "branch", [],
                                   [branch_out])
        true = helper.make_tensor("t", TensorProto.BOOL, [], [True])
        nodes += [helper.make_node("Constant", [], ["yes"], value=true),
                  helper.make_node("If", ["yes"], ["mixed"], then_branch=branch, else_branch=branch)]
        opsets.append(helper.make_opsetid(domain, 1))
    else:
        nodes.append(helper.make_node("Identity", ["logits"], ["mixed"]))
    nodes.append(helper.make_node("Softmax", ["mixed"], ["probabilities"], axis=1))
    graph = helper.make_graph(nodes, "linear", [features], [probabilities], [weights])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    return model


def _plain(graph: onnx.ModelProto) -> Callable[[Path], list[str]]:
    def write(path: Path) -> list[str]:
        path.write_bytes(graph.SerializeToString())
        return []

    return write


def _serve_graph(version_dir: Path, write: Callable[[Path], list[str]]) -> None:
    """The 1% served entry's file rewritten by ``write`` (which returns any extra files it made)."""
    fields = _manifest(version_dir)
    extra = write(version_dir / _served(fields)["file"])
    _rewrite(version_dir, lambda f: f["files_sha256"].update({name: "" for name in extra}))


def test_a_plain_graph_built_here_is_served(trained_version: Settings, tmp_path: Path) -> None:
    version_dir = _copy(trained_version, tmp_path)
    _serve_graph(version_dir, _plain(_linear_graph()))
    answered = ServedModelSet.load(version_dir).predict({"features": np.zeros((2, len(FEATURE_NAMES)))})
    np.testing.assert_allclose(answered["1%"], 1 / 3, atol=1e-6)


def test_a_graph_reading_external_data_is_refused(trained_version: Settings, tmp_path: Path) -> None:
    version_dir = _copy(trained_version, tmp_path)

    def external(path: Path) -> list[str]:
        onnx.save_model(_linear_graph(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="weights.bin", size_threshold=0)
        return ["weights.bin"]  # hashed like every file: the data is there, checked, and still refused

    _serve_graph(version_dir, external)
    with pytest.raises(ManifestError, match="external data"):
        ServedModelSet.load(version_dir)


@pytest.mark.parametrize(("domain", "nested"), [("com.microsoft", False), ("ai.onnx.contrib", False),
                                                ("com.example.ops", False), ("com.example.ops", True)])
def test_a_graph_with_operators_outside_the_standard_domains_is_refused(
    trained_version: Settings, tmp_path: Path, domain: str, nested: bool
) -> None:
    version_dir = _copy(trained_version, tmp_path)
    _serve_graph(version_dir, _plain(_linear_graph(domain, nested)))
    with pytest.raises(ManifestError, match=f"operator domain '{domain}'"):
        ServedModelSet.load(version_dir)


def test_the_serving_check_reads_the_fields_onnx_defines() -> None:
    """The check parses a subset of onnx.proto without the onnx package: same names, numbers, kinds."""
    from bse_predict.integrity.onnx_check import _SUBSET

    for message, fields in _SUBSET.items():
        descriptor = getattr(onnx, message).DESCRIPTOR
        for name, number, kind, repeated in fields:
            real = descriptor.fields_by_name[name]
            assert real.number == number, f"{message}.{name}"
            assert real.is_repeated == repeated, f"{message}.{name}"
            if kind in _SUBSET:
                assert real.message_type.name == kind, f"{message}.{name}"
            else:  # read as bytes or an int: the same wire type as onnx's string, message or enum
                assert real.type in (real.TYPE_STRING, real.TYPE_MESSAGE, real.TYPE_ENUM, real.TYPE_INT32), name


def test_a_serving_install_checks_and_loads_without_the_training_libraries(trained_version: Settings,
                                                                            tmp_path: Path) -> None:
    """No onnx, scikit-learn or joblib on a worker: the checks need only protobuf (onnxruntime's own)."""
    import subprocess
    import sys

    version_dir = _copy(trained_version, tmp_path)
    probe = ("import sys; from pathlib import Path\n"
             "for name in ('onnx', 'sklearn', 'joblib', 'skl2onnx'): sys.modules[name] = None\n"
             "from bse_predict.serving.onnx_runner import ServedModelSet\n"
             "print(ServedModelSet.load(Path(sys.argv[1])).targets)")
    result = subprocess.run([sys.executable, "-c", probe, str(version_dir)], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('1%', '2%', '5%')"


# ---------------------------------------------------------------- signed manifests


def _signed_settings(models_dir: Path, secret: str | None = SECRET) -> Settings:
    return load_settings(models_dir=str(models_dir), model_signing_secret=secret, **TRAINING_OVERRIDES)


@pytest.fixture(scope="module")
def signed_models(tmp_path_factory: pytest.TempPathFactory, futures_series: dict[str, CandleSeries]) -> Path:
    """A models folder with ``v-signed``, trained while the signing secret was set. The servable gate is
    off: this small forest on one symbol is significantly worse than climatology at 1% (7 blocks), and
    what is tested here is the signature (the gate's own tests: test_servable_gate, test_servable_serving)."""
    models_dir = tmp_path_factory.mktemp("signed-models")
    settings = _signed_settings(models_dir)
    gate_off = settings.training.model_copy(update={"servable_gate": settings.training.servable_gate.model_copy(
        update={"enabled": False})})
    train_version([futures_series["ETHUSDT"].tail(2500)], settings.model_copy(update={"training": gate_off}),
                  "v-signed", show_progress=False)
    return models_dir


@pytest.mark.parametrize("engine", ["onnx", "native"])
def test_with_a_signing_secret_an_unsigned_version_is_refused(trained_version: Settings, tmp_path: Path,
                                                              engine: str) -> None:
    version_dir = _copy(trained_version, tmp_path)
    with pytest.raises(ManifestError, match="is not signed"):
        load_predictor(_signed_settings(version_dir.parent), SOURCE, engine)  # type: ignore[arg-type]
    assert load_predictor(_signed_settings(version_dir.parent, None), SOURCE, engine).version == SOURCE


@pytest.mark.parametrize("engine", ["onnx", "native"])
def test_train_signs_and_the_worker_checks_the_signature(signed_models: Path, tmp_path: Path, engine: str) -> None:
    fields = _manifest(signed_models / "v-signed")
    assert isinstance(fields.get("signature"), str) and len(fields["signature"]) == 64
    assert load_predictor(_signed_settings(signed_models), "v-signed", engine).version == "v-signed"
    assert load_predictor(_signed_settings(signed_models, None), "v-signed", engine).version == "v-signed"
    with pytest.raises(ManifestError, match="signature does not match"):
        load_predictor(_signed_settings(signed_models, "another-secret-entirely"), "v-signed", engine)

    tampered = tmp_path / "models" / "v-signed"
    shutil.copytree(signed_models / "v-signed", tampered)
    fields["metrics"]["random_forest/1%"]["log_loss"] = 0.01  # a better figure than it earned
    (tampered / MANIFEST_NAME).write_text(json.dumps(fields))
    with pytest.raises(ManifestError, match="signature does not match"):
        load_predictor(_signed_settings(tampered.parent), "v-signed", engine)


def test_models_sign_signs_an_existing_version(trained_version: Settings, tmp_path: Path) -> None:
    version_dir = _copy(trained_version, tmp_path)
    runner = CliRunner()
    env = {"BSE_MODELS_DIR": str(version_dir.parent)}
    unkeyed = runner.invoke(app, ["models", "sign", SOURCE], env=env)
    assert unkeyed.exit_code == 2 and "BSE_MODEL_SIGNING_SECRET" in unkeyed.output

    signed = runner.invoke(app, ["models", "sign", SOURCE], env={**env, "BSE_MODEL_SIGNING_SECRET": SECRET})
    assert signed.exit_code == 0, signed.output
    assert load_predictor(_signed_settings(version_dir.parent), SOURCE).version == SOURCE

    served = version_dir / _served(_manifest(version_dir))["file"]
    served.write_bytes(served.read_bytes() + b"\0")
    refused = runner.invoke(app, ["models", "sign", SOURCE], env={**env, "BSE_MODEL_SIGNING_SECRET": SECRET})
    assert refused.exit_code == 2 and "sha256" in refused.output  # a signature vouches only for checked files
