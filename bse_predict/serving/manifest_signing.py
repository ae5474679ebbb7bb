"""HMAC-SHA256 signatures of model manifests (``BSE_MODEL_SIGNING_SECRET``).

A manifest's ``files_sha256`` pins every file of a version, so signing the manifest
signs the version: whoever can write to ``BSE_MODELS_DIR`` but does not hold the
secret cannot make a worker serve anything else.

The signature is the project's one formula (:mod:`bse_predict.integrity.signing`, the same as a
control message's): HMAC-SHA256 of the manifest's JSON object **as read from the
file**, without its ``signature`` member, in canonical JSON. Signing the document
rather than the pydantic model means a member this code does not know is signed
too, and a field added to the model later (with a default) does not change the
bytes of an older manifest.

The policy (:func:`check_signature`): with a secret, a version must carry a
signature and it must match; without one, signatures are neither required nor
checked (a development install has no secret to check them with).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from bse_predict.errors import ManifestError
from bse_predict.integrity.signing import SIGNATURE_FIELD, sign_fields, signature_matches

__all__ = ["SIGNATURE_FIELD", "sign_document", "check_signature"]


def sign_document(document: Mapping[str, Any], secret: SecretStr) -> dict[str, Any]:
    """``document`` with its ``signature`` set (replacing any older one)."""
    return {**document, SIGNATURE_FIELD: sign_fields(document, secret.get_secret_value())}


def check_signature(document: Mapping[str, Any], secret: SecretStr | None) -> None:
    """Refuse an unsigned or wrongly signed ``document`` when ``secret`` is set; accept any without."""
    if secret is None:
        return
    version = document.get("version")
    found = document.get(SIGNATURE_FIELD)
    if not found:
        raise ManifestError(f"version {version} is not signed, and BSE_MODEL_SIGNING_SECRET is set: "
                            f"sign it with `bse-predict models sign {version}` if you trust it")
    if not signature_matches(document, secret.get_secret_value()):
        raise ManifestError(f"version {version}: the manifest signature does not match (changed after signing, "
                            f"or signed under another secret)")
