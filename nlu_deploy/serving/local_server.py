"""A real Triton Inference Server on this machine, without Docker or a GPU: the `tritonserver`
binary in the nvidia-pytriton wheel, which has the Python backend only.

What it can serve: repositories written with `--triton-onnx-backend python` (the ONNX file runs
in a Python-backend model with onnxruntime, in place of the onnxruntime backend that only
NVIDIA's containers ship). Everything else is Triton's own: the ensemble, the dynamic batcher,
HTTP/gRPC and the metrics endpoint. The tests start one to check served answers against
`nlu-deploy predict`.

How the wheel's binary is made to run (checked on CPU with nvidia-pytriton 0.7.0):
- LD_LIBRARY_PATH holds the wheel's `nvidia_pytriton.libs` and the interpreter's libpython;
- the Python backend directory gets the stub built for this Python version;
- the stub's embedded interpreter finds its environment through PATH (the first `python3` on
  it), so this environment's bin directory goes first;
- that environment needs numpy < 2: the stub, built against numpy 1, misreads numpy 2 arrays.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nlu_deploy.errors import ConfigError, NluDeployError
from nlu_deploy.stopping import dies_with_this_process

PYTRITON_INSTALL = 'pip install "nvidia-pytriton==0.7.0"'


@dataclass(frozen=True)
class LocalTriton:
    http_url: str  # host:port, as tritonclient wants it
    grpc_url: str
    metrics_url: str  # http://host:port/metrics
    log: Path
    pid: int  # the tritonserver process

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return response.read().decode("utf-8")


def _pytriton_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the local Triton server comes from the nvidia-pytriton wheel: {PYTRITON_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def _check_numpy_major() -> None:
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise ConfigError(
            f"the Triton Python backend stub needs numpy < 2 in this environment (found "
            f'{numpy.__version__}): pip install "numpy<2"'
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _python_backend(pytriton: Path, workdir: Path) -> Path:
    """A backend directory with the Python backend and the stub for this interpreter."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pytriton / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ConfigError(f"nvidia-pytriton has no Triton Python backend stub for Python {version}.")
    backends = workdir / "backends"
    shutil.copytree(pytriton / "tritonserver" / "backends", backends, dirs_exist_ok=True)
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    return backends


def _ready(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def first_error_line(log: Path) -> str | None:
    """The server's own error that explains a failed start: a model's "failed to load" line, else
    the first error line (Triton's start with E, as in `E1201 02:40:00.123 ...`) that is not the
    CUDA or NVML noise every CPU-only host prints."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    errors = [line.strip() for line in text.splitlines() if line.startswith("E") and line[1:5].isdigit()]
    loading = [line for line in errors if "failed to load" in line]
    relevant = [line for line in errors if not any(noise in line for noise in ("CudaDriverHelper", "NVML", "CUDA"))]
    return next(iter(loading + relevant), None)


class ServerNotReady(NluDeployError):
    """tritonserver exited or hung before every model was ready; `first_error` is its own reason."""

    def __init__(self, why: str, log: Path) -> None:
        self.why, self.log, self.first_error = why, log, first_error_line(log)
        first = f" Its first error: {self.first_error}" if self.first_error else ""
        super().__init__(f"tritonserver {why}.{first} Its log ({log}) ends:\n{_log_tail(log)}")


def _server_files(binary: Path | None, workdir: Path) -> tuple[Path, Path, dict]:
    """(tritonserver, its backend directory, the environment it runs in)."""
    env = dict(os.environ)
    if binary is not None:  # another build (NVIDIA's container, a local build): its own backends
        binary = Path(binary)
        if not binary.is_file():
            raise ConfigError(f"{binary} is not a tritonserver binary.")
        return binary, binary.resolve().parents[1] / "backends", env
    _check_numpy_major()
    pytriton = _pytriton_dir()
    backends = _python_backend(pytriton, workdir)
    libraries = [str(pytriton.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [*libraries, env.get("LD_LIBRARY_PATH", "")]))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return pytriton / "tritonserver" / "bin" / "tritonserver", backends, env


@contextmanager
def local_triton_server(repository: Path, workdir: Path, start_timeout_s: float = 120.0, binary: Path | None = None):
    """Start tritonserver on `repository`, listening on localhost only, wait until every model
    is ready, yield a LocalTriton, and stop the server (always, also on errors). `binary`:
    another tritonserver than nvidia-pytriton's, with the backends beside it."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tritonserver, backends, env = _server_files(binary, workdir)
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    command = [
        str(tritonserver),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        "--exit-timeout-secs=10",
        "--log-verbose=0",
    ]
    log = workdir / "tritonserver.log"
    with log.open("w", encoding="utf-8") as log_file:
        # its own process group, so that stopping it reaches its Python-backend stubs too, and a
        # SIGTERM for it when this process dies, even by SIGKILL (no cleanup of ours runs then)
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=dies_with_this_process(),
        )
    server = LocalTriton(
        f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics", log, process.pid
    )
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _ready(server.http_url):
            if process.poll() is not None:
                raise ServerNotReady(f"exited with code {process.returncode} before it was ready", log)
            if time.monotonic() > deadline:
                raise ServerNotReady(f"was not ready within {start_timeout_s:.0f} s", log)
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (Triton stops its stubs), SIGKILL after 20 s; then whatever is left of its group."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)  # a stopped (hung) server acts on SIGTERM only once it runs
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stubs a killed server could not stop
    except (ProcessLookupError, PermissionError):
        pass
