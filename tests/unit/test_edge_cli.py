"""`modelferry agent`: run, rollback and status from the command line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelferry.cli import main
from modelferry.edge import InstalledVersion, install_version, load_public_keys
from modelferry.edge.install import prepare_root, staging_folder
from modelferry.edge.state import DeviceDeliveryState, StateStore
from modelferry.packaging import SigningKey
from modelferry.packaging.signing import VerifyKey

KEY = SigningKey.generate().verify_key


def install(root: Path, version: str, min_version: str | None = None) -> None:
    folder = staging_folder(root) / "package"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"model": {"name": "m", "version": version}}))
    entry = InstalledVersion("pkg", version, "m", version, f"d-{version}")
    install_version(root, folder, entry, min_version=min_version)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "edge"
    prepare_root(folder)
    return folder


def test_rollback_and_status(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install(root, "1")
    install(root, "2")

    assert main(["agent", "status", "--root", str(root)]) == 0
    shown = capsys.readouterr().out
    assert "current: pkg/2" in shown
    assert " * pkg/2" in shown
    assert "   pkg/1" in shown

    assert main(["agent", "rollback", "--root", str(root)]) == 0
    assert f"Rolled back {root}: pkg/2 -> pkg/1 is current" in capsys.readouterr().out
    assert os.readlink(root / "current") == "versions/pkg/1"

    assert main(["agent", "rollback", "--root", str(root)]) == 1
    assert "no version before pkg/1" in capsys.readouterr().err


def test_status_json_for_scripts(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install(root, "1")
    install(root, "2")
    with StateStore(root).update() as state:
        state.record(DeviceDeliveryState("d-2", "proj", "pkg", "2", "Success"))
        signed = "https://store.test/pkg-3.tar?sig=secret-signature"
        failed = {"reason": "smoke test failed", "url": signed}
        state.record(DeviceDeliveryState("d-3", "proj", "pkg", "3", "Error", failed))

    assert main(["agent", "status", "--root", str(root), "--output", "json"]) == 0

    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert err == ""
    assert shown["root"] == str(root)
    assert shown["current"]["package_id"] == "pkg"
    assert shown["current"]["version"] == "2"
    assert [(v["version"], v["current"]) for v in shown["installed"]] == [
        ("2", True),
        ("1", False),
    ]
    assert set(shown["installed"][0]) == {
        "package_id",
        "version",
        "model_name",
        "model_version",
        "delivery_id",
        "installed_at",
        "current",
    }
    assert shown["installed"][1]["delivery_id"] == "d-1"
    assert shown["installed"][1]["model_version"] == "1"
    assert [d["delivery_id"] for d in shown["recent_deliveries"]] == ["d-3", "d-2"]
    assert shown["recent_deliveries"][0] == {
        "delivery_id": "d-3",
        "project_id": "proj",
        "package_id": "pkg",
        "package_version": "3",
        "state": "Error",
        "reason": "smoke test failed",
        "updated_at": shown["recent_deliveries"][0]["updated_at"],
    }
    assert shown["recent_deliveries"][1]["reason"] is None
    stamps = [shown["current"]["installed_at"], shown["recent_deliveries"][0]["updated_at"]]
    for stamp in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert "secret-signature" not in out


def test_status_json_with_nothing_installed(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "status", "--root", str(root), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "root": str(root),
        "current": None,
        "installed": [],
        "recent_deliveries": [],
        "version_floors": {},
    }


def test_status_json_of_a_missing_root_fails_as_text_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["agent", "status", "--root", str(tmp_path / "missing")]
    assert main(argv) == 1
    text_err = capsys.readouterr().err
    assert main([*argv, "--output", "json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == text_err
    assert len(err.strip().splitlines()) == 1


def test_status_refuses_an_unknown_output_format(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", "status", "--root", str(root), "--output", "yaml"]) == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


def test_rollback_keeps_the_newer_version_listed_and_rolls_forward(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(root, "1")
    install(root, "2")

    assert main(["agent", "rollback", "--root", str(root)]) == 0
    assert "pkg/2 stays installed (`--to 2` makes it current again)" in capsys.readouterr().out
    assert (root / "versions" / "pkg" / "2").is_dir()
    assert main(["agent", "status", "--root", str(root)]) == 0
    shown = capsys.readouterr().out
    assert "current: pkg/1" in shown
    assert "   pkg/2" in shown
    assert " * pkg/1" in shown

    assert main(["agent", "rollback", "--root", str(root), "--to", "2"]) == 0
    assert f"Rolled forward {root}: pkg/1 -> pkg/2 is current" in capsys.readouterr().out
    assert os.readlink(root / "current") == "versions/pkg/2"

    assert main(["agent", "rollback", "--root", str(root), "--to", "7"]) == 1
    assert "version '7' is not kept" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["status", "rollback"])
@pytest.mark.parametrize("device", [[], ["--device-id", "edge-9"]], ids=["root", "device"])
def test_a_missing_root_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str, device: list[str]
) -> None:
    missing = tmp_path / "DOES-NOT-EXIST"

    assert main(["agent", action, "--root", str(missing), *device]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert f"no agent folder at {missing}" in err
    assert not missing.exists(), "status and rollback must not create the root"


def test_status_acts_on_one_device_folder_at_most(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["agent", "status", "--root", str(root), "--device-id", "a", "--device-id", "b"]

    assert main(argv) == 2
    assert "status takes one --device-id at most" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("action", "own", "foreign"),
    [
        ("status", "Show an agent's current version", "--broker-host"),
        ("rollback", "--to VERSION", "--public-key"),
    ],
)
def test_subcommand_help_is_its_own(
    capsys: pytest.CaptureFixture[str], action: str, own: str, foreign: str
) -> None:
    assert main(["agent", action, "--help"]) == 0

    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: modelferry agent {action}")
    assert own in shown
    assert foreign not in shown


@pytest.mark.parametrize("action", ["run", "rollback", "status"])
def test_subcommand_help_fits_the_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["agent", action, "--help"]) == 0

    shown = capsys.readouterr().out
    assert max(len(line) for line in shown.splitlines()) <= 80, shown
    if action == "run":
        assert "(default: mqtt)" in " ".join(shown.split())


def test_agent_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "--help"]) == 0

    shown = " ".join(capsys.readouterr().out.split())
    for default in ("(default: mqtt)", "(default: 1883)", "(default: 3)", "(default: 60.0)"):
        assert default in shown


def test_device_id_selects_a_folder_of_a_multi_agent_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device_root = tmp_path / "fleet" / "edge-7"
    prepare_root(device_root)
    install(device_root, "3")

    code = main(["agent", "status", "--root", str(tmp_path / "fleet"), "--device-id", "edge-7"])

    assert code == 0
    assert "current: pkg/3" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give at least one --public-key"),
        (["--trust-file", "/nonexistent/trust.json"], "--trust-file: cannot read the trust file"),
        (["--public-key", "not-a-key"], "--public-key: a public key must be"),
        (["--public-key", KEY.public_base64, "--transport", "mqtt"], "give --device-id"),
        (
            ["--public-key", KEY.public_base64, "--device-id", "d", "--password-env", "NO_SUCH"],
            "the environment variable NO_SUCH is not set",
        ),
        (
            ["--public-key", KEY.public_base64, "--transport", "iothub"],
            "--connection-string-env must name an environment variable",
        ),
        (
            ["--public-key", KEY.public_base64, "--device-id", "d", "--device-id", "d"],
            "each --device-id may be given once",
        ),
        (
            ["--public-key", KEY.public_base64, "--device-ids-file", "/nonexistent/ids.txt"],
            "--device-ids-file: cannot read /nonexistent/ids.txt",
        ),
    ],
)
def test_incomplete_run_options_are_usage_errors(
    root: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("NO_SUCH", raising=False)
    assert main(["agent", "--root", str(root), *extra]) == 2
    assert message in capsys.readouterr().err


def test_public_keys_load_from_files_and_inline_text(tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    pem.write_text(KEY.public_pem())
    b64 = tmp_path / "key.pub"
    b64.write_text(KEY.public_base64 + "\n")

    keys = load_public_keys([pem, str(b64), KEY.public_base64])

    assert keys == [KEY, KEY, KEY]
    assert all(isinstance(key, VerifyKey) for key in keys)


def test_the_agent_runs_until_sigterm(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    command = [
        sys.executable,
        "-m",
        "modelferry.cli",
        "agent",
        "--transport",
        "local",
        "--device-id",
        "edge-1",
        "--root",
        str(root),
        "--public-key",
        KEY.public_base64,
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        started = time.monotonic()
        line = ""
        while "connected" not in line and time.monotonic() - started < 60:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
        assert "edge agent(s) edge-1 connected" in line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (root / "state.json").exists()
    assert (root / "versions").is_dir()


def test_secrets_are_taken_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelferry.cli import _build_parser
    from modelferry.cli.agent import _transports

    monkeypatch.setenv("BROKER_PASSWORD", "s3cret")
    args = _build_parser().parse_args(
        ["agent", "--root", "r", "--device-id", "d", "--password-env", "BROKER_PASSWORD"]
    )

    transport_for, devices = _transports(args)

    assert devices == ["d"]
    assert "BROKER_PASSWORD" not in os.environ  # the smoke child cannot inherit it
    transport = transport_for("d")
    assert transport.device_id == "d"
    assert "s3cret" not in repr(transport)


def test_a_rollback_below_the_floor_is_refused_unless_asked_for(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(root, "1")
    install(root, "2", min_version="2")
    install(root, "3")  # a package without min_version never lowers the floor

    assert main(["agent", "status", "--root", str(root)]) == 0
    assert "anti-rollback floor: m >= 2" in capsys.readouterr().out
    assert main(["agent", "rollback", "--root", str(root), "--to", "2"]) == 0
    capsys.readouterr()

    assert main(["agent", "rollback", "--root", str(root), "--to", "1"]) == 1
    err = capsys.readouterr().err
    assert "pkg/1 holds m version 1, below 2, the lowest version of m" in err
    assert "--below-floor" in err
    assert os.readlink(root / "current") == "versions/pkg/2"

    assert main(["agent", "rollback", "--root", str(root), "--to", "1", "--below-floor"]) == 0
    assert os.readlink(root / "current") == "versions/pkg/1"
    capsys.readouterr()
    assert main(["agent", "status", "--root", str(root), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["version_floors"] == {"m": "2"}  # it stays


def test_the_floor_survives_a_new_state_object(root: Path) -> None:
    install(root, "5", min_version="4")
    install(root, "6", min_version="3")  # lower: the floor only rises

    assert StateStore(root).read().version_floors == {"m": "4"}
    with StateStore(root).update() as state:
        state.raise_floor("m", "10")
    assert StateStore(root).read().version_floors == {"m": "10"}


def test_a_bad_trust_file_is_a_usage_error(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = tmp_path / "trust.json"
    trust.write_text('{"format": "modelferry-trust/1", "keys": [], "revoked": []}')

    assert main(["agent", "--root", str(root), "--trust-file", str(trust)]) == 2
    err = capsys.readouterr().err
    assert f"--trust-file: {trust} is not a valid trust file" in err

    revoked = {"public_key": KEY.public_base64, "roles": ["package-signing"]}
    trust.write_text(
        json.dumps(
            {"format": "modelferry-trust/1", "keys": [revoked], "revoked_key_ids": [KEY.key_id]}
        )
    )
    assert main(["agent", "--root", str(root), "--trust-file", str(trust)]) == 2
    assert "no unrevoked package-signing key is trusted" in capsys.readouterr().err


def test_run_refuses_a_bad_log_format_setting_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFERRY_LOG_FORMAT", "xml")
    argv = ["agent", "run", "--root", str(tmp_path / "edge"), "--public-key", "x"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "MODELFERRY_LOG_FORMAT: set it to text, or json" in err
    assert "Traceback" not in err


def test_run_refuses_an_unknown_log_format_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", "run", "--root", str(tmp_path), "--log-format", "xml"]) == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err
