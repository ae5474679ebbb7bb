"""HMAC-SHA256 signatures of model manifests (``BSE_MODEL_SIGNING_SECRET``).

A manifest's ``files_sha256`` pins every file of a version, so signing the manifest
signs the version: whoever can write to ``BSE_MODELS_DIR`` but does not hold the
secret cannot make a worker serve anything else.

The signed bytes are the manifest's JSON object **as read from the file**, without
its ``signature`` member, serialised canonically: keys sorted at every level, no
whitespace (separators ``,`` and ``:``), non-ASCII characters as themselves, floats
in Python's shortest round-trip form, NaN and infinities refused, UTF-8::

    json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
               allow_nan=False).encode("utf-8")

Signing the document rather than the pydantic model means a member this code does
not know is signed too, and a field added to the model later (with a default) does
not change the bytes of an older manifest. The signature is the lowercase hex
HMAC-SHA256 of those bytes under the UTF-8 bytes of the secret, stored in the
manifest's ``signature`` member.

The policy (:func:`check_signature`): with a secret, a version must carry a
signature and it must match; without one, signatures are neither required nor
checked (a development install has no secret to check them with).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from models.errors import ManifestError

__all__ = ["SIGNATURE_FIELD", "canonical_bytes", "signature_of", "sign_document", "check_signature"]

SIGNATURE_FIELD = "signature"


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: ``document`` without its signature, canonical JSON (see above)."""
    unsigned = {key: value for key, value in document.items() if key != SIGNATURE_FIELD}
    try:
        text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise ManifestError(f"manifest {document.get('version')!r} cannot be signed: {exc}") from exc
    return text.encode("utf-8")


def signature_of(document: Mapping[str, Any], secret: SecretStr) -> str:
    return hmac.new(secret.get_secret_value().encode("utf-8"), canonical_bytes(document), hashlib.sha256).hexdigest()


def sign_document(document: Mapping[str, Any], secret: SecretStr) -> dict[str, Any]:
    """``document`` with its ``signature`` set (replacing any older one)."""
    return {**document, SIGNATURE_FIELD: signature_of(document, secret)}


def check_signature(document: Mapping[str, Any], secret: SecretStr | None) -> None:
    """Refuse an unsigned or wrongly signed ``document`` when ``secret`` is set; accept any without."""
    if secret is None:
        return
    version = document.get("version")
    found = document.get(SIGNATURE_FIELD)
    if not found:
        raise ManifestError(f"version {version} is not signed, and BSE_MODEL_SIGNING_SECRET is set: "
                            f"sign it with `bse-predict models sign {version}` if you trust it")
    if not isinstance(found, str) or not hmac.compare_digest(found, signature_of(document, secret)):
        raise ManifestError(f"version {version}: the manifest signature does not match (changed after signing, "
                            f"or signed under another secret)")
