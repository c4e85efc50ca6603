"""The MQTT transport against a broker that wants TLS and a password, as real brokers do."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from modelferry.delivery.channels.mqtt.channel import (
    MqttBroker,
    MqttChannel,
    MqttDeviceTransport,
    MqttOptions,
)
from modelferry.errors import ChannelError
from modelferry.testing.contracts.delivery import new_delivery, run, state, take
from modelferry.testing.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-broker-pass"
OPTIONS = MqttOptions(connect_timeout_s=5.0, reconnect_min_s=0.1)


@dataclass(frozen=True)
class SecureBroker:
    mosquitto: Mosquitto
    ca_file: Path
    other_ca_file: Path


def write_ca(folder: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def write_server_cert(
    folder: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.fail("mosquitto_passwd is missing: install Debian's mosquitto package")
    folder = tmp_path_factory.mktemp("mosquitto-tls")
    ca, ca_key = write_ca(folder, "ca")
    write_ca(folder, "other-ca")
    write_server_cert(folder, ca, ca_key)
    for user in ("cloud", "press-9"):
        subprocess.run(
            [
                passwd,
                *(["-c"] if user == "cloud" else []),
                "-b",
                str(folder / "passwd"),
                user,
                PASSWORD,
            ],
            check=True,
            capture_output=True,
        )
    config = "\n".join(
        [
            f"cafile {folder / 'ca.pem'}",
            f"certfile {folder / 'server.pem'}",
            f"keyfile {folder / 'server.key'}",
            f"password_file {folder / 'passwd'}",
        ]
    )
    with Mosquitto(folder, allow_anonymous=False, extra_config=config) as broker:
        yield SecureBroker(broker, folder / "ca.pem", folder / "other-ca.pem")


def broker_for(
    secure: SecureBroker, user: str, password: str, ca: Path | None = None
) -> MqttBroker:
    return MqttBroker(
        "localhost",
        secure.mosquitto.port,
        username=user,
        password=SecretStr(password),
        ca_file=str(ca or secure.ca_file),
    )


def test_messages_flow_over_tls_with_passwords(secure: SecureBroker) -> None:
    async def scenario() -> None:
        async with (
            MqttChannel(broker_for(secure, "cloud", PASSWORD), options=OPTIONS) as channel,
            MqttDeviceTransport(
                "press-9", broker_for(secure, "press-9", PASSWORD), options=OPTIONS
            ) as device,
        ):
            for index in range(20):  # several packets per TLS record exercise the drain
                await channel.send(new_delivery("press-9", f"c2d-{index}"))
            await asyncio.gather(
                *(device.send(state("press-9", "Installing", f"d2c-{i}")) for i in range(20))
            )
            c2d = await take(device, 20)
            d2c = await take(channel, 20)
        assert [m.delivery_id for m in c2d] == [f"c2d-{i}" for i in range(20)]
        assert sorted(m.delivery_id or "" for m in d2c) == sorted(f"d2c-{i}" for i in range(20))

    run(scenario)


def test_a_wrong_password_is_refused_and_never_shown(
    secure: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    channel = MqttChannel(broker_for(secure, "cloud", "wrong-pass-42"), options=OPTIONS)

    async def scenario() -> str:
        with pytest.raises(ChannelError, match="refused the connection") as info:
            await channel.open()
        return str(info.value)

    with caplog.at_level(logging.DEBUG):
        shown = run(scenario)
    assert "wrong-pass-42" not in shown
    assert "wrong-pass-42" not in repr(channel)
    assert "wrong-pass-42" not in caplog.text


def test_a_broker_certificate_from_an_unknown_ca_is_refused(secure: SecureBroker) -> None:
    broker = broker_for(secure, "cloud", PASSWORD, ca=secure.other_ca_file)

    async def scenario() -> None:
        with pytest.raises(ChannelError, match="certificate verify failed"):
            await MqttChannel(broker, options=OPTIONS).open()

    run(scenario)
