"""A device with only `pip install modelferry[edge]` runs the reference agent end to end.

The edge install is built in a venv of its own (cached at `.modelferry/cache/edge-venv`,
rebuilt when pyproject.toml or constraints.txt change): it must hold neither Prefect nor
MLflow nor pandas, and its `modelferry agent` must receive a real signed package over MQTT
from the cloud side (`roll_out`), verify it, pass the smoke prediction and install it.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelferry.delivery.channels.mqtt.channel import MqttBroker, MqttChannel
from modelferry.delivery.fleet import roll_out
from modelferry.delivery.plan import DeliveryPlan, FleetPolicy
from modelferry.packaging import PackageInputs, SigningKey, build_package
from modelferry.stores.local import LocalPackageStore
from modelferry.testing.mosquitto import Mosquitto
from tests.model_fixtures import save_small_lightgbm_model
from tests.venvs import create_venv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".modelferry" / "cache" / "edge-venv"
MARKER = "modelferry-edge-inputs.sha256"
KEY = SigningKey.generate()


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((REPO / name).read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def edge_venv() -> Path:
    """A venv with the project installed with its `edge` extra only (editable: today's code)."""
    wanted = _inputs_digest()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "edge-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = VENV / MARKER
        if not (marker.is_file() and marker.read_text() == wanted):
            shutil.rmtree(VENV, ignore_errors=True)
            create_venv(VENV, ["-c", "constraints.txt", "-e", ".[edge]"])
            marker.write_text(wanted)
    return VENV


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    folder = tmp_path / "broker"
    folder.mkdir()
    with Mosquitto(folder) as broker:
        yield broker


def _package(tmp_path: Path) -> Path:
    folder = save_small_lightgbm_model(tmp_path / "model", example_rows=2)
    inputs = PackageInputs(
        package_id="bcc-edge",
        version="1",
        model_dir=folder,
        model_name="bc-classifier",
        model_version="1",
        run_id=None,
        dataset_digest=None,
        created_at=datetime(2026, 5, 1, tzinfo=UTC),
        class_names=("malignant", "benign"),
    )
    return build_package(inputs, KEY, tmp_path / "builds").path


def test_the_edge_install_is_small(edge_venv: Path) -> None:
    listed = subprocess.run(
        [str(edge_venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True, text=True, check=True,
    ).stdout.lower()  # fmt: skip
    installed = {line.split("==")[0] for line in listed.splitlines()}
    assert {"lightgbm", "scikit-learn", "skops", "paho-mqtt", "cryptography"} <= installed
    # SQLAlchemy and alembic are core (the local state stores and their migrations, which
    # the core `modelferry endpoints` commands read); the orchestrator stack is not.
    assert not installed & {"prefect", "mlflow", "mlflow-skinny", "pandas", "fastapi"}


def test_an_edge_only_device_installs_a_package_over_mqtt(
    edge_venv: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    store = LocalPackageStore(tmp_path / "store")
    stored = store.put(_package(tmp_path), package_id="bcc-edge", version="1")
    root = tmp_path / "device"
    agent = subprocess.Popen(
        [str(edge_venv / "bin" / "modelferry"), "agent", "--transport", "mqtt",
         "--broker-host", mosquitto.host, "--broker-port", str(mosquitto.port),
         "--device-id", "edge-only-1", "--root", str(root),
         "--public-key", KEY.verify_key.public_base64],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert agent.stderr is not None
        line = ""
        while "connected" not in line:
            line = agent.stderr.readline()
            assert line or agent.poll() is None, "the edge agent exited at start"
        plan = DeliveryPlan(
            package=stored,
            devices=("edge-only-1",),
            project_id="test-bcc",
            model_name="bc-classifier",
            model_version="1",
        )
        channel = MqttChannel(MqttBroker(mosquitto.host, mosquitto.port), client_id="cloud-edge")
        policy = FleetPolicy(inactivity_timeout=120, deadline=300, retries=0)
        result = asyncio.run(roll_out(plan, channel, store, policy=policy))
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert result.counts == {"Success": 1}, result.failure_message()
    assert (root / "current").readlink() == Path("versions/bcc-edge/1")
    assert (root / "current" / "score.py").is_file()
