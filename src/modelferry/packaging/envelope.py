"""DSSE envelopes (https://github.com/secure-systems-lab/dsse), signed with Ed25519.

An envelope is JSON: `{"payload": base64, "payloadType": str, "signatures": [{"keyid":
str, "sig": base64}]}`. Each signature covers `pae(payloadType, payload)`, never the JSON
itself, so the envelope can be re-serialised without breaking it and a signature made for
one payload type can never be replayed as another. `keyid` is an unauthenticated hint: it
narrows which key to try and nothing more.

Reading is bounded and strict: size and nesting are checked before parsing, `NaN` and
`Infinity` are refused, either base64 alphabet is accepted (the spec requires it), and
every problem is a `PackageVerificationError`, never another exception.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelferry.errors import PackageVerificationError
from modelferry.json_depth import nesting_depth
from modelferry.packaging.signing import SigningKey

__all__ = ["Envelope", "EnvelopeSignature", "pae", "sign_envelope"]

#: Larger envelopes are refused unread; a statement and a few signatures take ~1 KB.
MAX_ENVELOPE_BYTES = 64 * 1024
#: The envelope nests 3 levels (object, signatures array, signature object).
MAX_ENVELOPE_DEPTH = 4
MAX_SIGNATURES = 16
_BASE64 = re.compile(r"^[A-Za-z0-9+/\-_]*={0,2}$")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what each signature covers.

    `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in bytes, as decimals.
    """
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class EnvelopeSignature:
    """One signature of an envelope and the (unauthenticated) id of the key it claims."""

    keyid: str | None
    sig: bytes

    def __repr__(self) -> str:
        return f"EnvelopeSignature(keyid={self.keyid!r})"


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope: a typed payload and the signatures over its PAE."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]

    @property
    def signed_bytes(self) -> bytes:
        """The bytes every signature covers: `pae(payload_type, payload)`."""
        return pae(self.payload_type, self.payload)

    def to_bytes(self) -> bytes:
        """The envelope as JSON: sorted keys, 2-space indent, standard base64, a newline."""
        document = {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {
                    **({"keyid": s.keyid} if s.keyid is not None else {}),
                    "sig": base64.b64encode(s.sig).decode("ascii"),
                }
                for s in self.signatures
            ],
        }
        return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "the envelope") -> Envelope:
        """Parse an envelope within bounds; `name` is how messages call it.

        Raises:
            PackageVerificationError: too large or deep, not UTF-8 JSON, a field missing or
                of the wrong type, bad base64, no or too many signatures.
        """
        if len(data) > MAX_ENVELOPE_BYTES:
            raise PackageVerificationError(
                f"{name} is larger than {MAX_ENVELOPE_BYTES} bytes; refusing to read it"
            )
        if nesting_depth(data, stop_above=MAX_ENVELOPE_DEPTH) > MAX_ENVELOPE_DEPTH:
            raise PackageVerificationError(
                f"{name} nests deeper than {MAX_ENVELOPE_DEPTH} levels; it is not a DSSE envelope"
            )
        document = _load_json(data, name)
        if not isinstance(document, dict):
            raise PackageVerificationError(f"{name} must hold a JSON object (a DSSE envelope)")
        payload_type = document.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise PackageVerificationError(f"{name} has no payloadType string")
        payload = _decode_base64(document.get("payload"), f"{name}: payload")
        listed = document.get("signatures")
        if not isinstance(listed, list) or not listed:
            raise PackageVerificationError(f"{name} holds no signatures")
        if len(listed) > MAX_SIGNATURES:
            raise PackageVerificationError(
                f"{name} holds {len(listed)} signatures; at most {MAX_SIGNATURES} are read"
            )
        signatures = []
        for number, item in enumerate(listed, 1):
            if not isinstance(item, dict):
                raise PackageVerificationError(f"{name}: signature {number} is not an object")
            keyid = item.get("keyid")
            if keyid is not None and not isinstance(keyid, str):
                raise PackageVerificationError(f"{name}: signature {number} keyid is not a string")
            sig = _decode_base64(item.get("sig"), f"{name}: signature {number}")
            signatures.append(EnvelopeSignature(keyid or None, sig))
        return cls(payload_type, payload, tuple(signatures))


def sign_envelope(payload_type: str, payload: bytes, signers: Sequence[SigningKey]) -> Envelope:
    """An envelope of `payload` signed by each of `signers`, in order, keyids set."""
    if not signers:
        raise ValueError("an envelope needs at least one signer")
    signed = pae(payload_type, payload)
    return Envelope(
        payload_type,
        payload,
        tuple(EnvelopeSignature(key.key_id, key.sign(signed)) for key in signers),
    )


def _load_json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PackageVerificationError(f"{name} is not UTF-8 JSON") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def _decode_base64(value: object, what: str) -> bytes:
    """Standard or URL-safe base64 (DSSE verifiers must take either), padding optional."""
    if not isinstance(value, str) or not _BASE64.fullmatch(value):
        raise PackageVerificationError(f"{what} is not a base64 string")
    text = value.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise PackageVerificationError(f"{what} is not valid base64") from None
