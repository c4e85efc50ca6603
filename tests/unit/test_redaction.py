"""Secrets cut out of text: known ones in every encoding, SAS signatures, URL passwords."""

from __future__ import annotations

import pytest

from modelferry.redaction import MASK, Redactor, without_query

KEY = "c2VjcmV0K2tleS9wYXJ0PT0="  # base64 with "+", "/" and "="


def test_a_known_secret_is_cut_raw_and_url_encoded() -> None:
    redact = Redactor([KEY])
    text = f"raw {KEY}; query key%3D{KEY.replace('+', '%2B').replace('/', '%2F')}; path {KEY}"
    redacted = redact(text)
    assert "c2VjcmV0" not in redacted
    assert redacted.count(MASK) == 3


def test_the_longest_form_goes_first_so_no_half_secret_is_left() -> None:
    redact = Redactor(["abc", "abcdef-long-secret"])
    assert redact("x abcdef-long-secret y") == f"x {MASK} y"


def test_sas_signatures_and_url_passwords_are_cut_without_being_known() -> None:
    redact = Redactor()
    text = (
        "GET https://acct.blob.core.windows.net/c/p.zip?sv=2024&SIG=abc%2Fdef&se=1 failed; "
        "db postgresql://deliver:pa55@db:5432/records refused"
    )
    redacted = redact(text)
    assert "abc%2Fdef" not in redacted
    assert "pa55" not in redacted
    assert f"SIG={MASK}" not in redacted  # the parameter is kept by name, lower-cased
    assert f"sig={MASK}&se=1" in redacted
    assert f"postgresql://deliver:{MASK}@db:5432/records" in redacted


def test_empty_secrets_do_not_mask_everything() -> None:
    assert Redactor(["", "k"])("look") == "loo" + MASK  # only the real secret


def test_a_download_link_is_shown_without_its_query() -> None:
    url = "https://acct.blob.core.windows.net/c/p.zip?sv=1&sig=SECRET"
    assert without_query(url) == "https://acct.blob.core.windows.net/c/p.zip?…"
    assert without_query("http://host/p.zip") == "http://host/p.zip"


def test_the_repr_holds_no_secret() -> None:
    assert KEY not in repr(Redactor([KEY]))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:p/w@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        (
            "a https://u:pw@h/x and mqtt://a:b@c:1883 z",
            "a https://u:***@h/x and mqtt://a:***@c:1883 z",
        ),
        ('"https://u:pw@h"', '"https://u:***@h"'),
        ("https://h/path@x", "https://h/path@x"),
        ("mqtt://user@host", "mqtt://user@host"),
    ],
)
def test_a_password_written_without_percent_encoding_is_cut_whole(text: str, shown: str) -> None:
    assert Redactor()(text) == shown
