"""The one signature formula of the project: HMAC-SHA256 over a JSON object's canonical bytes.

Control messages, ``control.state`` records and model manifests are all signed this way: the
object without its ``signature`` member, as ``json.dumps(m, sort_keys=True, separators=(",", ":"))``
writes it, UTF-8, under the UTF-8 bytes of the secret; the signature is the lowercase hex digest.
Signing the decoded object as received (not a re-serialised model) keeps members the reader does not
know covered, and a signature valid when a field with a default is added later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["SIGNATURE_FIELD", "signed_bytes", "sign_fields", "signature_matches"]

SIGNATURE_FIELD = "signature"


def signed_bytes(fields: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: ``fields`` without ``signature``, canonical JSON, UTF-8."""
    unsigned = {k: v for k, v in fields.items() if k != SIGNATURE_FIELD}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_fields(fields: Mapping[str, Any], secret: str) -> str:
    """Hex HMAC-SHA256 of :func:`signed_bytes` with ``secret``."""
    return hmac.new(secret.encode("utf-8"), signed_bytes(fields), hashlib.sha256).hexdigest()


def signature_matches(fields: Mapping[str, Any], secret: str) -> bool:
    """``fields`` carry the signature of ``secret`` (compared in constant time)."""
    found = fields.get(SIGNATURE_FIELD)
    return isinstance(found, str) and hmac.compare_digest(found.encode("utf-8"), sign_fields(fields, secret).encode())
