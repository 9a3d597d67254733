"""BentoML 1.4 beside algomesh, from a virtualenv of its own.

BentoML 1.4 pins opentelemetry versions other than algomesh's, so it is not a dependency
of the project (not even of the ``bench`` extra): the benchmark installs it once into
``~/.cache/algomesh-bench/bentoml-1.4`` (``$ALGOMESH_BENCH_BENTOML_VENV`` to put it
elsewhere) with this Python's base interpreter, and runs ``bentoml serve`` from there on
bench/bentoml_chain/service.py. When the install fails (no package index, a broken
wheel), the BentoML path is skipped and the reason printed.

The version is pinned to 1.4.30. From 1.4.32 (1.4.31 was never released) to 1.4.40, the
newest at the time of writing, the client behind ``bentoml.depends`` swaps its aiohttp
session every 100 requests (``SessionManager.max_requests``) and closes the old session
while other requests are still using it. With 32 calls in flight the entry service then
answers HTTP 500 (``ServerDisconnectedError``, ``Can not write request body``, ``Connector
is closed``): a quarter of the calls, seen with 1.4.39 and 1.4.40. 1.4.30 keeps one
session per dependency and answers every call.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench._procs import Child

HERE = Path(__file__).resolve().parent
SERVICE_DIR = HERE / "bentoml_chain"
VERSION = "1.4.30"  # see above: later 1.4 releases fail with calls in flight
REQUIREMENT = f"bentoml=={VERSION}"
TEXT = "".join(chr(33 + i % 90) for i in range(100))  # the 100-byte payload, as BentoML's JSON text
BODY = ('{"text": "' + TEXT.replace("\\", "\\\\").replace('"', '\\"') + '"}').encode()
ENV = {"BENTOML_DO_NOT_TRACK": "True"}


def venv() -> Path:
    default = Path.home() / ".cache" / "algomesh-bench" / "bentoml-1.4"
    return Path(os.environ.get("ALGOMESH_BENCH_BENTOML_VENV", default))


def _version(python: Path) -> str | None:
    try:
        out = subprocess.run([str(python), "-c", "import bentoml; print(bentoml.__version__)"],
                             capture_output=True, text=True, timeout=120, env={**os.environ, **ENV})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def ensure(log) -> tuple[Path | None, str, str]:
    """(the venv's python, BentoML's version, "") when BentoML VERSION can run; else
    (None, "", why not). Installs it on first use (and over any other version found)."""
    python = venv() / "bin" / "python"
    found = _version(python) if python.exists() else None
    if found == VERSION:
        return python, found, ""
    log(f"BentoML: installing {REQUIREMENT} into {venv()} (once; it would change algomesh's "
        "opentelemetry pins, so it gets a virtualenv of its own)")
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(venv())], check=True, capture_output=True, timeout=300)
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", REQUIREMENT],
                             capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, "", f"could not create {venv()}: {exc}"
    if pip.returncode != 0:
        return None, "", f"pip install {REQUIREMENT} failed: {(pip.stderr or pip.stdout).strip()[-400:]}"
    found = _version(python)
    if found != VERSION:
        return None, "", f"{venv()} has bentoml {found!r} after installing, not {VERSION}"
    return python, found, ""


def start(python: Path, port: int, log_path: Path) -> Child:
    """``bentoml serve service:Stage1`` on 127.0.0.1:port (it starts Stage2 and Stage3)."""
    with open(log_path, "wb") as logfile:
        return Child("bentoml serve", ["-m", "bentoml", "serve", "service:Stage1", "--host", "127.0.0.1",
                                       "--port", str(port)],
                     python=str(python), stdout=logfile, stderr=subprocess.STDOUT, cwd=str(SERVICE_DIR),
                     env={**os.environ, **ENV})


def wait_ready(child: Child, port: int, timeout: float = 120.0) -> None:
    """Until every service answers: /readyz of the entry service says 200."""
    end = time.monotonic() + timeout
    while True:
        if child.popen.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with code {child.popen.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"bentoml serve not ready within {timeout:.0f}s")
        time.sleep(0.5)
