"""Format 2: the DSSE envelope, the signed statement, key roles, revocation, expiry, floors."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from modelferry.errors import (
    KeyRoleError,
    PackageExpiredError,
    PackageFormatError,
    PackageVerificationError,
    PackagingError,
    RevokedKeyError,
    TrustFileError,
    UntrustedKeyError,
    VersionFloorError,
)
from modelferry.packaging import (
    INVALID_SIGNATURE,
    PACKAGE_SIGNING_ROLE,
    STATEMENT_TYPE,
    BuiltPackage,
    Envelope,
    PackageInputs,
    PackageStatement,
    SigningKey,
    TrustedKey,
    TrustPolicy,
    VerifyKey,
    build_package,
    default_expiry,
    pae,
    sign_envelope,
    unpack_package,
    verify_package,
    verify_signed_package,
    write_deterministic_zip,
)

KEY = SigningKey.from_base64(SecretStr(base64.b64encode(bytes(range(32))).decode()))
OTHER = SigningKey.from_base64(SecretStr(base64.b64encode(bytes(range(1, 33))).decode()))
EXPIRES = datetime(2099, 1, 1, tzinfo=UTC)
ENVELOPE = "manifest.dsse.json"

# RFC 8032, section 7.1, test 1: a published Ed25519 key (signatures are deterministic).
RFC8032_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def make_inputs(folder: Path, version: str = "3") -> PackageInputs:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text("flavors:\n  sklearn:\n    pickled_model: model.skops\n")
    (folder / "model.skops").write_bytes(bytes(range(256)) * 8)
    return PackageInputs(
        package_id="pkg",
        version=version,
        model_dir=folder,
        model_name="m",
        model_version=version,
        run_id=None,
        dataset_digest=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        class_names=("no", "yes"),
        requirements=("numpy==2.0.0",),
    )


@pytest.fixture
def built(tmp_path: Path) -> BuiltPackage:
    return build_package(make_inputs(tmp_path / "model"), KEY, tmp_path / "out", expires_at=EXPIRES)


def read_all(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def rewrite(path: Path, entries: dict[str, bytes]) -> Path:
    """The package rezipped with `entries`: what an attacker with the file can do."""
    target = path.with_name("altered.zip")
    write_deterministic_zip(target, dict(entries))
    return target


def with_envelope(built: BuiltPackage, envelope: bytes) -> Path:
    return rewrite(built.path, {**read_all(built.path), ENVELOPE: envelope})


def resigned(built: BuiltPackage, statement: dict[str, object], *signers: SigningKey) -> Path:
    """The package with a statement of our choosing, validly signed by `signers`."""
    payload = json.dumps(statement).encode()
    envelope = sign_envelope(STATEMENT_TYPE, payload, list(signers or [KEY]))
    return with_envelope(built, envelope.to_bytes())


def statement_of(built: BuiltPackage) -> dict[str, object]:
    assert built.statement is not None
    return built.statement.model_dump(mode="json")


# ------------------------------------------------------------------------------ DSSE


def test_pae_matches_the_dsse_specification() -> None:
    # The example of the DSSE protocol specification.
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    # Lengths count bytes, not characters; an empty body still ends with its space.
    assert pae("application/vnd.ex\u00e4mple+json", b"") == (
        b"DSSEv1 29 application/vnd.ex\xc3\xa4mple+json 0 "
    )


def test_an_ed25519_envelope_matches_a_published_key() -> None:
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032_SEED))
    signer = SigningKey(private)
    assert base64.b64decode(signer.verify_key.public_base64).hex() == RFC8032_PUBLIC
    payload = b'{"_type":"https://in-toto.io/Statement/v1"}'

    envelope = sign_envelope("application/vnd.in-toto+json", payload, [signer])

    assert envelope.signed_bytes == (b"DSSEv1 28 application/vnd.in-toto+json 43 " + payload)
    parsed = Envelope.from_bytes(envelope.to_bytes())
    assert parsed == envelope
    assert signer.verify_key.is_valid_signature(parsed.signed_bytes, parsed.signatures[0].sig)
    # Either base64 alphabet is read (DSSE requires verifiers to accept both).
    document = json.loads(envelope.to_bytes())
    sig = base64.b64decode(document["signatures"][0]["sig"])
    document["signatures"][0]["sig"] = base64.urlsafe_b64encode(sig).decode().rstrip("=")
    assert Envelope.from_bytes(json.dumps(document).encode()).signatures[0].sig == sig


# ------------------------------------------------------------------------- round trip


def test_a_format_2_package_verifies_and_says_what_vouched_for_it(built: BuiltPackage) -> None:
    verified = verify_signed_package(built.path, [KEY.verify_key])

    assert verified.manifest == built.manifest
    assert verified.manifest.format == "modelferry-package/2"
    assert verified.statement == built.statement
    assert verified.signer_key_ids == (KEY.key_id,)
    assert verified.statement is not None
    assert verified.statement.expires == "2099-01-01T00:00:00Z"
    assert verify_package(built.path, TrustPolicy.from_keys([KEY.verify_key])) == built.manifest
    assert "format 2, expires 2099-01-01T00:00:00Z" in built.summary()


def test_unpack_package_takes_a_policy(built: BuiltPackage, tmp_path: Path) -> None:
    dest = tmp_path / "unpacked"
    unpack_package(built.path, dest, TrustPolicy.from_keys([KEY.verify_key]))
    assert (dest / ENVELOPE).is_file()
    assert (dest / "model" / "MLmodel").is_file()


def test_the_default_expiry_counts_periods_from_the_model_versions_creation(
    tmp_path: Path,
) -> None:
    inputs = make_inputs(tmp_path / "model")
    built = build_package(inputs, KEY, tmp_path / "out")
    again = build_package(make_inputs(tmp_path / "model"), KEY, tmp_path / "again")

    assert built.statement is not None
    assert built.statement.expires_at == default_expiry(inputs.created_at)
    assert again.sha256 == built.sha256  # rebuilt, the same bytes


def test_the_default_expiry_is_the_same_on_any_day_of_a_period_and_never_about_to_end() -> None:
    created = datetime(2026, 1, 10, 8, 30, 15, 123456, tzinfo=UTC)
    first = created.replace(microsecond=0) + timedelta(days=90)
    assert default_expiry(created, now=created) == first
    assert default_expiry(created, now=created + timedelta(days=59)) == first
    # With less than 30 days left, the next period: a rebuild never ships a dying package.
    assert default_expiry(created, now=created + timedelta(days=61)) == first + timedelta(days=90)
    assert default_expiry(created, now=created + timedelta(days=400)) == created.replace(
        microsecond=0
    ) + timedelta(days=450)
    for day in range(0, 1000, 7):
        now = created + timedelta(days=day)
        expiry = default_expiry(created, now=now)
        assert expiry - now >= timedelta(days=30)
        assert expiry - now <= timedelta(days=120)


# --------------------------------------------------------------------------- tampering


def test_a_tampered_payload_fails_the_signature(built: BuiltPackage) -> None:
    document = json.loads(read_all(built.path)[ENVELOPE])
    statement = statement_of(built)
    statement["expires"] = "2199-01-01T00:00:00Z"
    document["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()

    with pytest.raises(PackageVerificationError) as caught:
        verify_package(with_envelope(built, json.dumps(document).encode()), [KEY.verify_key])
    assert str(caught.value) == INVALID_SIGNATURE


def test_a_tampered_manifest_fails_the_signature(built: BuiltPackage) -> None:
    entries = read_all(built.path)
    document = json.loads(entries["manifest.json"])
    document["class_names"] = ["yes", "no"]
    entries["manifest.json"] = json.dumps(document, sort_keys=True, indent=2).encode() + b"\n"

    with pytest.raises(PackageVerificationError) as caught:
        verify_package(rewrite(built.path, entries), [KEY.verify_key])
    assert str(caught.value) == INVALID_SIGNATURE


def test_a_statement_for_another_model_version_is_refused(built: BuiltPackage) -> None:
    statement = {**statement_of(built), "model": {"name": "m", "version": "9"}}

    with pytest.raises(PackageVerificationError, match="disagree on the format, package or model"):
        verify_package(resigned(built, statement), [KEY.verify_key])


def test_a_wrong_key_is_named(built: BuiltPackage) -> None:
    with pytest.raises(UntrustedKeyError) as caught:
        verify_package(built.path, [OTHER.verify_key])

    assert caught.value.key_id == KEY.key_id
    assert f"signed with key {KEY.key_id}, which is not trusted here" in str(caught.value)
    assert OTHER.key_id in str(caught.value)


def test_a_wrong_keyid_hint_does_not_matter(built: BuiltPackage) -> None:
    document = json.loads(read_all(built.path)[ENVELOPE])
    document["signatures"][0]["keyid"] = OTHER.key_id  # unauthenticated: only a hint

    altered = with_envelope(built, json.dumps(document).encode())
    policy = TrustPolicy.from_keys([OTHER.verify_key, KEY.verify_key])
    assert verify_signed_package(altered, policy).signer_key_ids == (KEY.key_id,)


def test_a_package_holding_both_signature_kinds_is_refused(built: BuiltPackage) -> None:
    entries = {**read_all(built.path), "manifest.sig": b"AAAA\n"}

    with pytest.raises(
        PackageVerificationError, match=r"holds both manifest\.sig and manifest\.dsse"
    ):
        verify_package(rewrite(built.path, entries), [KEY.verify_key])


# ---------------------------------------------------------------- roles and revocation


def test_a_revoked_key_is_refused_even_when_listed_as_trusted(built: BuiltPackage) -> None:
    policy = TrustPolicy(
        keys=(TrustedKey(KEY.verify_key, frozenset({PACKAGE_SIGNING_ROLE})),),
        revoked=frozenset({KEY.key_id}),
    )

    with pytest.raises(RevokedKeyError) as caught:
        verify_package(built.path, policy)
    assert caught.value.key_id == KEY.key_id
    assert f"signed with key {KEY.key_id}, which this device's trust file revokes" in str(
        caught.value
    )
    assert "signed again with a current key" in str(caught.value)


def test_a_revoked_key_id_alone_is_enough(built: BuiltPackage) -> None:
    policy = TrustPolicy.from_keys([OTHER.verify_key])
    policy = TrustPolicy(policy.keys, revoked=frozenset({KEY.key_id}))

    with pytest.raises(RevokedKeyError):
        verify_package(built.path, policy)


def test_a_key_without_the_package_signing_role_is_refused(built: BuiltPackage) -> None:
    policy = TrustPolicy(keys=(TrustedKey(KEY.verify_key, frozenset({"device-config"})),))

    with pytest.raises(KeyRoleError) as caught:
        verify_package(built.path, policy)
    assert (caught.value.key_id, caught.value.role) == (KEY.key_id, PACKAGE_SIGNING_ROLE)
    message = str(caught.value)
    assert f"key {KEY.key_id}, which is trusted here for device-config" in message
    assert "give this key that role in the trust file" in message


def test_roles_and_revocation_apply_to_format_1_too(tmp_path: Path) -> None:
    old = build_package(make_inputs(tmp_path / "model"), KEY, tmp_path / "out", package_format=1)

    assert verify_package(old.path, [KEY.verify_key]) == old.manifest
    with pytest.raises(RevokedKeyError):
        verify_package(old.path, TrustPolicy(revoked=frozenset({KEY.key_id})))
    role_less = TrustPolicy(keys=(TrustedKey(KEY.verify_key, frozenset()),))
    with pytest.raises(KeyRoleError, match="trusted here for no role"):
        verify_package(old.path, role_less)


def test_a_threshold_needs_distinct_package_signing_keys(tmp_path: Path) -> None:
    policy = TrustPolicy(
        TrustPolicy.from_keys([KEY.verify_key, OTHER.verify_key]).keys, threshold=2
    )
    inputs = make_inputs(tmp_path / "model")
    both = build_package(inputs, KEY, tmp_path / "two", expires_at=EXPIRES, co_signers=[OTHER])
    one = build_package(inputs, KEY, tmp_path / "one", expires_at=EXPIRES)

    assert verify_signed_package(both.path, policy).signer_key_ids == (KEY.key_id, OTHER.key_id)
    with pytest.raises(UntrustedKeyError, match=r"carries 1 valid signature\(s\).*requires 2"):
        verify_package(one.path, policy)
    twice = resigned(one, statement_of(one), KEY, KEY)
    with pytest.raises(UntrustedKeyError, match="requires 2"):
        verify_package(twice, policy)
    old = build_package(inputs, KEY, tmp_path / "old", package_format=1)
    with pytest.raises(UntrustedKeyError, match="a format 1 package carries one"):
        verify_package(old.path, policy)


# --------------------------------------------------------- expiry, floors and formats


def test_an_expired_package_is_refused_naming_the_expiry(built: BuiltPackage) -> None:
    late = datetime(2099, 1, 1, tzinfo=UTC)

    with pytest.raises(PackageExpiredError) as caught:
        verify_signed_package(built.path, [KEY.verify_key], now=late)
    assert (caught.value.package, caught.value.expires) == ("pkg/3", "2099-01-01T00:00:00Z")
    message = str(caught.value)
    assert "pkg/3 expired at 2099-01-01T00:00:00Z (it is now 2099-01-01T00:00:00Z)" in message
    assert "signed again with a later expiry, or check this device's clock" in message
    just_before = late - timedelta(seconds=1)
    assert verify_signed_package(built.path, [KEY.verify_key], now=just_before).statement


def test_a_version_below_the_floor_is_refused(built: BuiltPackage) -> None:
    with pytest.raises(VersionFloorError) as caught:
        verify_signed_package(built.path, [KEY.verify_key], version_floors={"m": "4"})
    error = caught.value
    assert (error.model_name, error.model_version, error.floor) == ("m", "3", "4")
    assert "m version 3 is below 4, the lowest version of m this device accepts" in str(error)
    assert "deliver version 4 or newer" in str(error)
    # At the floor, or for another model's floor, it installs; 10 sorts above 4.
    for floors in ({"m": "3"}, {"m": "3.0"}, {"other": "99"}, {"m": "2.10"}):
        assert verify_signed_package(built.path, [KEY.verify_key], version_floors=floors)


def test_the_floor_applies_to_format_1_packages(tmp_path: Path) -> None:
    old = build_package(make_inputs(tmp_path / "model"), KEY, tmp_path / "out", package_format=1)

    with pytest.raises(VersionFloorError):
        verify_signed_package(old.path, [KEY.verify_key], version_floors={"m": "4"})


def test_a_package_below_its_own_min_version_is_refused(built: BuiltPackage) -> None:
    statement = {**statement_of(built), "min_version": "5"}

    with pytest.raises(VersionFloorError, match="m version 3 is below 5"):
        verify_package(resigned(built, statement), [KEY.verify_key])


def test_format_1_still_verifies_unless_the_device_requires_format_2(tmp_path: Path) -> None:
    old = build_package(make_inputs(tmp_path / "model"), KEY, tmp_path / "out", package_format=1)
    policy = TrustPolicy.from_keys([KEY.verify_key])

    assert verify_package(old.path, policy) == old.manifest
    with pytest.raises(PackageFormatError) as caught:
        verify_package(old.path, policy.requiring_format(2))
    assert (caught.value.found, caught.value.required) == (1, 2)
    assert "this device requires format 2" in str(caught.value)
    assert policy.requiring_format(2).requiring_format(1).minimum_format == 2  # never lowered


# ------------------------------------------------------------------ malformed envelopes


def _signed_other_type(built: BuiltPackage) -> bytes:
    payload = json.dumps(statement_of(built)).encode()
    return sign_envelope("application/vnd.in-toto+json", payload, [KEY]).to_bytes()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda b: b"not json", "manifest.dsse.json is not UTF-8 JSON"),
        (lambda b: b"\xff\xfe", "manifest.dsse.json is not UTF-8 JSON"),
        (lambda b: b"[]", "must hold a JSON object"),
        (lambda b: b'{"payload": "e30=", "signatures": []}', "has no payloadType"),
        (lambda b: b'{"payloadType": "x", "payload": "e30=", "signatures": []}', "no signatures"),
        (
            lambda b: b'{"payloadType": "x", "payload": "not base64!", "signatures": [{}]}',
            "payload is not a base64 string",
        ),
        (
            lambda b: b'{"payloadType": "x", "payload": "e30=", "signatures": [{"sig": 5}]}',
            "signature 1 is not a base64 string",
        ),
        (
            lambda b: b'{"payloadType": "x", "payload": "e", "signatures": [{"sig": "e30="}]}',
            "payload is not valid base64",
        ),
        (
            lambda b: b'{"payloadType": "x", "payload": "e30=", "signatures": [{"sig": NaN}]}',
            "is not UTF-8 JSON",
        ),
        (
            lambda b: b'{"payloadType": "x", "payload": "e30=", "signatures": [[]]}',
            "signature 1 is not an object",
        ),
        (
            lambda b: b'{"payloadType": "x", "payload": "e30=", "signatures": "AAAA"}',
            "holds no signatures",
        ),
        (
            lambda b: json.dumps(
                {"payloadType": "x", "payload": "e30=", "signatures": [{"sig": "AA=="}] * 17}
            ).encode(),
            "holds 17 signatures; at most 16",
        ),
        (lambda b: b"[" * 1000 + b"]" * 1000, "nests deeper than 4 levels"),
        (lambda b: b" " * (64 * 1024 + 1), "larger than 65536 bytes"),
        (
            lambda b: b'{"payloadType": "x", "payload": "e30=", "signatures": [{"sig": "AA=="}]}',
            INVALID_SIGNATURE,
        ),
        (_signed_other_type, "carries a 'application/vnd.in-toto+json' payload"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "array",
        "no-type",
        "empty-signatures",
        "bad-payload-base64",
        "sig-not-string",
        "truncated-base64",
        "nan",
        "signature-not-object",
        "signatures-not-list",
        "too-many-signatures",
        "deep",
        "huge",
        "unsigned",
        "wrong-payload-type",
    ],
)
def test_malformed_envelopes_are_refused_cleanly(
    built: BuiltPackage, make: object, expected: str
) -> None:
    envelope = make(built)  # type: ignore[operator]

    with pytest.raises(PackageVerificationError) as caught:
        verify_package(with_envelope(built, envelope), [KEY.verify_key])
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "change",
    [
        {"expires": None},
        {"expires": "tomorrow"},
        {"expires": "2099-02-30T00:00:00Z"},
        {"manifest_sha256": "x"},
        {"min_version": "seven"},
        {"statement": "something-else/1"},
        {"model": [1, 2]},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_signed_but_malformed_statement_is_refused(
    built: BuiltPackage, change: dict[str, object]
) -> None:
    statement = {**statement_of(built), **change}

    with pytest.raises(PackageVerificationError, match=r"statement|valid date"):
        verify_package(resigned(built, statement), [KEY.verify_key])


def test_a_signed_statement_of_the_wrong_shape_is_refused(built: BuiltPackage) -> None:
    for payload in (b"[1]", b"NaN", b"\xff"):
        envelope = sign_envelope(STATEMENT_TYPE, payload, [KEY])
        with pytest.raises(PackageVerificationError, match="the signed statement"):
            verify_package(with_envelope(built, envelope.to_bytes()), [KEY.verify_key])


def test_reprs_hold_no_signature_bytes(built: BuiltPackage) -> None:
    envelope = Envelope.from_bytes(read_all(built.path)[ENVELOPE])
    shown = repr(envelope)
    assert base64.b64encode(envelope.signatures[0].sig).decode() not in shown
    assert KEY.key_id in shown


# ----------------------------------------------------------------------- the builder


def test_the_builder_refuses_terms_no_device_would_accept(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "model")
    out = tmp_path / "out"

    with pytest.raises(PackagingError, match="min_version 4 is above the packaged model version 3"):
        build_package(inputs, KEY, out, min_version="4")
    with pytest.raises(PackagingError, match="cannot be compared as a version"):
        build_package(inputs, KEY, out, min_version="v3")
    with pytest.raises(PackagingError, match="has passed"):
        build_package(inputs, KEY, out, expires_at=datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(PackagingError, match="time-zone aware"):
        build_package(inputs, KEY, out, expires_at=datetime(2099, 1, 1))
    with pytest.raises(PackagingError, match="format 1 package carries no expiry"):
        build_package(inputs, KEY, out, package_format=1, min_version="3")
    with pytest.raises(PackagingError, match="package_format must be 1 or 2"):
        build_package(inputs, KEY, out, package_format=3)
    assert not out.exists()

    floored = build_package(inputs, KEY, out, min_version="3", expires_at=EXPIRES)
    assert floored.statement is not None
    assert floored.statement.min_version == "3"
    assert "min version 3" in floored.summary()


# ----------------------------------------------------------------------- trust files


def trust_file(tmp_path: Path, **document: object) -> Path:
    path = tmp_path / "trust.json"
    base: dict[str, object] = {
        "format": "modelferry-trust/1",
        "keys": [
            {"public_key": KEY.verify_key.public_base64, "roles": [PACKAGE_SIGNING_ROLE]},
            {"public_key": OTHER.verify_key.public_pem(), "roles": ["device-config"]},
        ],
    }
    path.write_text(json.dumps({**base, **document}))
    return path


def test_a_trust_file_gives_roles_revocations_and_requirements(
    built: BuiltPackage, tmp_path: Path
) -> None:
    policy = TrustPolicy.load(
        trust_file(tmp_path, revoked_key_ids=["0123456789abcdef"], minimum_package_format=2)
    )

    assert set(policy.signers) == {KEY.key_id}
    assert len(policy) == 1
    assert policy.minimum_format == 2
    assert verify_signed_package(built.path, policy).signer_key_ids == (KEY.key_id,)
    # Plain keys added on top (`--public-key`) sign packages, unless revoked.
    revoked = TrustPolicy.load(trust_file(tmp_path, revoked_key_ids=[OTHER.key_id]))
    assert set(revoked.with_keys([OTHER.verify_key]).signers) == {KEY.key_id}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"format": "modelferry-trust/9"}, "format"),
        ({"keys": []}, "keys"),
        ({"keys": [{"public_key": "nope", "roles": []}]}, "keys[1]: a public key must be"),
        (
            {
                "keys": [
                    {"public_key": KEY.verify_key.public_base64, "roles": [], "key_id": "0" * 16}
                ]
            },
            f"says key_id {'0' * 16} but its public key has id {KEY.key_id}",
        ),
        ({"revoked_keys": []}, "revoked_keys: Extra inputs are not permitted"),
        ({"revoked_key_ids": ["KEY"]}, "revoked_key_ids"),
        ({"threshold": 3}, "threshold 3 exceeds the 1 unrevoked package-signing key"),
        ({"minimum_package_format": 3}, "minimum_package_format"),
        ({"threshold": float("nan")}, "not UTF-8 JSON"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_an_invalid_trust_file_names_the_problem(
    tmp_path: Path, change: dict[str, object], expected: str
) -> None:
    path = trust_file(tmp_path, **change)

    with pytest.raises(TrustFileError) as caught:
        TrustPolicy.load(path)
    assert str(caught.value).startswith(f"{path} is not a valid trust file: ")
    assert expected in str(caught.value)
    assert caught.value.path == str(path)


def test_unreadable_or_hostile_trust_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TrustFileError, match="cannot read the trust file"):
        TrustPolicy.load(tmp_path / "missing.json")
    with pytest.raises(TrustFileError, match="nests deeper than 8 levels"):
        TrustPolicy.from_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(TrustFileError, match="larger than"):
        TrustPolicy.from_json(b" " * (1024 * 1024 + 1))


def test_errors_keep_their_context_through_pickling() -> None:
    # Prefect carries a failed task's exception between processes.
    errors = [
        RevokedKeyError("r", key_id="k"),
        KeyRoleError("k", key_id="k", role=PACKAGE_SIGNING_ROLE),
        PackageExpiredError("e", package="p/1", expires="2026-01-01T00:00:00Z"),
        VersionFloorError("f", model_name="m", model_version="1", floor="2"),
        PackageFormatError("f", found=1, required=2),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), vars(copy)) == (type(error), str(error), vars(error))


def test_a_statement_round_trips() -> None:
    statement = PackageStatement(
        package_id="p",
        version="1",
        model={"name": "m", "version": "1"},  # type: ignore[arg-type]
        manifest_sha256="0" * 64,
        expires="2099-01-01T00:00:00Z",
        min_version="1",
    )
    assert PackageStatement.from_bytes(statement.to_bytes()) == statement
    assert VerifyKey.load(KEY.verify_key.public_pem()) == KEY.verify_key
