"""Keep database passwords out of anything a user or a log can see.

A SQL data source URL may carry a password, in its user-info part or as a query
parameter. Every URL shown and every driver message passed on goes through here first.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

from modelferry.redaction import MASK

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


# libpq and some drivers also accept the password as a query parameter.
_PASSWORD_PARAMS = frozenset({"password", "passwd", "pwd"})
# Fallback for URLs SQLAlchemy cannot parse: "scheme://user:password@host...".
_USERINFO_PASSWORD = re.compile(r"(?P<head>://[^:/@]*:)(?P<password>[^@/]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<password>[^&#]*)", re.I)


def mask_url(url: str) -> str:
    """Return `url` with any password replaced by ``***``.

    Args:
        url: A SQLAlchemy database URL, possibly holding a password.

    Returns:
        The URL safe to show, e.g. ``postgresql+psycopg://user:***@host:5432/db``.
    """
    parsed = _parsed(url)
    if parsed is None:
        # Unparsable (e.g. a non-numeric port): mask by pattern rather than show it raw.
        masked = _USERINFO_PASSWORD.sub(rf"\g<head>{MASK}@", url)
        return _QUERY_PASSWORD.sub(rf"\g<head>{MASK}", masked)
    query = {
        key: (MASK if key.lower() in _PASSWORD_PARAMS else value)
        for key, value in parsed.query.items()
    }
    rendered = parsed.set(query=query).render_as_string(hide_password=True)
    # The query string is percent-encoded on rendering; show the mask as written.
    return rendered.replace(quote_plus(MASK), MASK)


def scrub(text: str, url: str) -> str:
    """Remove every trace of the password in `url` from `text`.

    Driver and SQLAlchemy messages can echo the URL or connection string; this replaces
    the raw URL, then the password in each of its spellings (plain and percent-encoded).

    Args:
        text: A message that may contain the URL or its password.
        url: The secret URL whose password must not appear.

    Returns:
        `text` with the URL masked and the password replaced by ``***``.
    """
    text = text.replace(url, mask_url(url))
    for secret in sorted(_passwords(url), key=len, reverse=True):
        for spelling in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(spelling, MASK)
    return text


def _parsed(url: str) -> URL | None:
    # SQLAlchemy is imported here: `modelferry validate` masks text without loading it.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def _passwords(url: str) -> set[str]:
    found = {m.group("password") for m in _USERINFO_PASSWORD.finditer(url)}
    found |= {m.group("password") for m in _QUERY_PASSWORD.finditer(url)}
    parsed = _parsed(url)
    if parsed is not None:
        if parsed.password is not None:
            found.add(str(parsed.password))
        for key, value in parsed.query.items():
            if key.lower() in _PASSWORD_PARAMS:
                found.update([value] if isinstance(value, str) else value)
    # An empty password would "match" everywhere; it is no secret anyway.
    return {secret for secret in found if secret}


# Config fields whose whole value is secret, wherever they appear.
SECRET_FIELDS = frozenset({"url", "password", "passwd", "pwd", "token", "secret", "api_key"})
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_SHOWN_CHARS = 80
# "user:password@" anywhere, e.g. in a URL whose "//" a path normalisation collapsed.
_ANY_USERINFO = re.compile(r"(?P<head>[^\s/:@]*:)(?P<password>[^\s/@]+)@")


def mask_text(text: str) -> str:
    """Return `text` with the password of every URL-like part in it masked.

    Args:
        text: Free text that may embed database URLs, e.g. a config value.

    Returns:
        `text` with user-info and password query parameters replaced by ``***``.
    """
    masked = _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)
    masked = _ANY_USERINFO.sub(rf"\g<head>{MASK}@", masked)
    return _QUERY_PASSWORD.sub(rf"\g<head>{MASK}", masked)


def mask_value(field: str | int | None, value: object) -> str:
    """Render a config value for an error message, never showing a secret.

    Values of secret fields are withheld, mappings and lists are named by type only (they
    may hold secrets deeper down), and any URL inside a string has its password masked.

    Args:
        field: The name of the field holding `value` (last part of its location).
        value: The value found in the config.

    Returns:
        A short text safe for errors and logs, e.g. ``'abc'``, ``3``, ``(secret)`` or
        ``a mapping``.
    """
    if isinstance(field, str) and field.lower() in SECRET_FIELDS:
        return "(secret)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    if isinstance(value, str):
        masked = mask_text(value)
        shown = masked if len(masked) <= _SHOWN_CHARS else f"{masked[:_SHOWN_CHARS]}..."
        return repr(shown)
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return f"a {type(value).__name__}"
