"""Names Azure ML accepts for endpoints and deployments, derived deterministically.

Azure ML wants 3 to 32 characters matching `^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`, and
treats endpoint names case-insensitively (they become host names). A name that already
fits is kept as it is; any other name is cleaned and given a short hash of the original,
so that two different inputs (`my_model`, `my-model`, `My-Model`) never share a name.
"""

from __future__ import annotations

import hashlib
import re

from modelferry.errors import InvalidEndpointSpecError

#: Azure ML's limit for endpoint and deployment names.
MAX_NAME_LENGTH = 32
MIN_NAME_LENGTH = 3

# 8 hex digits: a collision needs two inputs with the same cleaned prefix *and* the same
# 32-bit hash prefix (about 1 in 4 billion per pair), not merely the same prefix.
_HASH_LENGTH = 8
_VALID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_INVALID_RUN = re.compile(r"[^a-z0-9]+")


def azure_name(name: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A valid Azure ML endpoint or deployment name for `name`, the same on every call.

    A name that is already valid (lowercase letters, digits, inner dashes, starting with a
    letter, 3 to `max_length` long) comes back unchanged, so the result of this function
    maps to itself. Any other name is lowercased, each run of other characters becomes
    one dash, names not starting with a letter get an `m-` prefix, the result is cut to
    fit, and `-` plus 8 hex digits of the SHA-256 of the original name is appended.

    Args:
        name: any string, e.g. a registered model name such as "Breast_Cancer v2".
        max_length: the longest name allowed; 32 for endpoints and deployments.

    Raises:
        ValueError: `max_length` leaves no room for the hash suffix.
    """
    if max_length < MIN_NAME_LENGTH + _HASH_LENGTH + 1:
        raise ValueError(f"max_length {max_length} is too short for a hashed name")
    if MIN_NAME_LENGTH <= len(name) <= max_length and _VALID.match(name):
        return name
    cleaned = _INVALID_RUN.sub("-", name.lower()).strip("-")
    if not cleaned[:1].isalpha():
        cleaned = f"m-{cleaned}".rstrip("-")
    head = cleaned[: max_length - _HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{_short_hash(name)}"


def endpoint_name(model_name: str, suffix: str) -> str:
    """A region-unique endpoint name for a model: `<model>-<suffix>`, at most 32 characters.

    Azure ML endpoint names are unique per Azure region, across every workspace and
    subscription, so a bare model name is likely taken. The suffix (a stage and region,
    e.g. "prod-weu", or a short hash of the workspace id) always survives in full; the
    model part is shortened, with a hash, when the whole would be too long.

    Raises:
        InvalidEndpointSpecError: the suffix is empty, invalid or longer than 16 characters.
    """
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?", suffix):
        raise InvalidEndpointSpecError(
            f"endpoint suffix {suffix!r} must be 1 to 16 lowercase letters, digits or inner "
            "dashes, e.g. 'prod-weu'"
        )
    room = MAX_NAME_LENGTH - len(suffix) - 1
    plain = f"{model_name}-{suffix}"
    if len(plain) <= MAX_NAME_LENGTH and _VALID.match(plain):
        return plain
    head = _INVALID_RUN.sub("-", model_name.lower()).strip("-")
    if not head[:1].isalpha():
        head = f"m-{head}".rstrip("-")
    # The hash is of the model name alone: the suffix is kept verbatim beside it.
    head = head[: room - _HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{_short_hash(model_name)}-{suffix}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_LENGTH]
