"""Cutting secrets out of text before it reaches a message, a log line or an artifact.

One place for the ways a secret shows up in what SDKs and servers say:

- a known secret (an account key, a connection string, a webhook URL), raw or URL-encoded:
  `Redactor(secrets)` replaces each with `MASK`, longest first;
- a SAS signature (`sig=...`) of any storage URL, known or not;
- a password in a URL's user-info part (`scheme://user:password@host`);
- a URL's query, which for a presigned download link is the credential: `without_query`.

Database URLs have their own parser-aware masking in `modelferry.data.masking`, with the
same `MASK`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, urlsplit

__all__ = ["MASK", "Redactor", "without_query"]

#: What a secret is replaced with.
MASK: Final = "***"

_SAS_SIGNATURE: Final = re.compile(r"(?i)\bsig=[^&\s'\"<>]+")
# Up to the last `@` of the URL: a password written without percent-encoding may hold `/`
# or `@` itself, and showing a host too few is better than a password's tail.
_URL_PASSWORD: Final = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s'\"<>]*@")


class Redactor:
    """Cuts known secrets, SAS signatures and URL passwords out of text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        """Remember `secrets` (empty ones are skipped) in their raw and URL-encoded forms."""
        variants = {v for s in secrets if s for v in (s, quote(s, safe=""), quote(s))}
        # Longest first, so an encoded form is not half-replaced by a shorter one.
        self._secrets = sorted(variants, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """`text` without any secret this redactor knows or recognises."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        text = _SAS_SIGNATURE.sub(f"sig={MASK}", text)
        return _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secret forms)"


def without_query(url: str) -> str:
    """`url` without its query (shown as `?…`): a SAS token is a credential, even a short one."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")
