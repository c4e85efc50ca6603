"""A venv with Microsoft's Azure ML inference server, and a running `azmlinfsrv` in it.

`azureml-inference-server-http` pins pydantic and opentelemetry versions that clash with
Prefect's, so it gets its own venv, as Azure ML gives a scoring script its own image. The
model libraries there are pinned to the versions of this project's venv so that a model
loads (and scores) identically on both sides.

The venv is cached across test sessions at `.modelferry/cache/azmlinfsrv-venv` (git-ignored):
building it takes one to two minutes, reusing it none. A marker file inside records the
requirements it was built from; when they change (say, lightgbm is upgraded in the main
venv) it is rebuilt. A file lock keeps parallel sessions from building it twice. Delete the
folder to force a rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = REPO_ROOT / ".modelferry" / "cache" / "azmlinfsrv-venv"
INFERENCE_SERVER = "azureml-inference-server-http==1.5.1"
# Pinned to this venv's versions: the model must load and score the same in both.
MATCHED_PACKAGES = ("lightgbm", "scikit-learn", "skops", "mlflow-skinny", "pandas", "numpy")
_MARKER = "modelferry-requirements.txt"
_PIP_TIMEOUT_S = 900.0


class VenvBuildError(RuntimeError):
    """The venv could not be created or its packages installed; the message holds pip's output."""


def requirements() -> list[str]:
    """What the venv installs: the inference server and this venv's model libraries."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in MATCHED_PACKAGES]
    return [INFERENCE_SERVER, *pins]


def ensure_venv(path: Path = VENV_DIR) -> Path:
    """The venv at `path`, built (or rebuilt) unless its marker lists today's requirements.

    Raises:
        VenvBuildError: `python -m venv` or `pip install` failed, with their output.
    """
    wanted = "\n".join(requirements()) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        marker = path / _MARKER
        if marker.is_file() and marker.read_text() == wanted and server_command(path).exists():
            return path
        shutil.rmtree(path, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(path)], "creating the venv")
        _run([str(path / "bin" / "python"), "-m", "pip", "install", *requirements()], "pip")
        marker.write_text(wanted)  # last: a half-built venv has no marker
    return path


def server_command(venv: Path) -> Path:
    """The `azmlinfsrv` entry point of `venv`."""
    return venv / "bin" / "azmlinfsrv"


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        partial = exc.output or ""
        if isinstance(partial, bytes):
            partial = partial.decode(errors="replace")
        raise VenvBuildError(
            f"{what} took over {_PIP_TIMEOUT_S:.0f} s: {' '.join(command)}\n{partial[-12000:]}"
        ) from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-12000:]
        raise VenvBuildError(f"{what} failed ({done.returncode}): {' '.join(command)}\n{output}")


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def inference_server(
    venv: Path, entry_script: Path, model_dir: Path, log_path: Path, timeout_s: float = 120.0
) -> Iterator[str]:
    """Run `azmlinfsrv` on `entry_script` with `AZUREML_MODEL_DIR=model_dir`; yield its URL.

    The script's folder is the app root (`AML_APP_ROOT`), as a deployment's code folder
    is on Azure ML: API documents beside the script are served at `/swagger.json`.

    Waits until `GET /` answers; stops the server's whole process group (gunicorn and its
    workers) on exit.

    Raises:
        RuntimeError: the server exited or did not answer within `timeout_s`; holds its log.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env.update(
        AZUREML_MODEL_DIR=str(model_dir),
        AML_APP_ROOT=str(entry_script.parent),
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    )
    command = [str(server_command(venv)), "--entry_script", str(entry_script)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, url, log_path, timeout_s)
        yield url
    finally:
        _stop(process)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"azmlinfsrv exited ({process.returncode}) before answering; its log:\n"
                f"{log.read_text(errors='replace')[-12000:]}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(
        f"azmlinfsrv did not answer GET / within {timeout_s:.0f} s; its log:\n"
        f"{log.read_text(errors='replace')[-12000:]}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
