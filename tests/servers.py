"""Real servers for tests and benchmarks, on 127.0.0.1 and free ports, stopped and removed
afterwards: a PostgreSQL cluster of our own (Debian's `postgresql` package; `.ci/run` installs
it), an `mlflow server` over any backend store, and `mlflow models serve` of a model."""

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin(name):
    """A PostgreSQL server program: on PATH, else in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql; `make test` does)")
    return found


def _as_user():
    """PostgreSQL refuses to run as root: as root, run it as `postgres` (Debian's package makes
    that user) or `nobody`; otherwise as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and there is neither a postgres nor a nobody user to run PostgreSQL as")


@contextlib.contextmanager
def postgres(databases=("mlflow", "optuna")):
    """A fresh PostgreSQL cluster on 127.0.0.1:<free port> (trust authentication, user
    medrobust) holding `databases`; yields {name: URL}. The cluster and its folder are removed."""
    user = _as_user()
    folder = Path(tempfile.mkdtemp(prefix="medrobust-pg-"))
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)

    def run(*cmd, **kw):
        prefix = ["runuser", "-u", user.pw_name, "--"] if user is not None else []
        return subprocess.run(prefix + list(cmd), check=True, capture_output=True, text=True, timeout=120, **kw)

    port = free_port()
    data = folder / "data"
    try:
        run(postgres_bin("initdb"), "-D", str(data), "-U", "medrobust", "--auth=trust", "--no-sync")
        run(postgres_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        for name in databases:
            run(postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "medrobust", name)
        yield {name: f"postgresql://medrobust@127.0.0.1:{port}/{name}" for name in databases}
    finally:
        with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
            run(postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_uri, artifacts, env):
    """`mlflow server` on 127.0.0.1:<free port> over backend_uri, serving artifacts from the
    folder `artifacts`; yields its URL once it answers /health. Stopped (its whole process group) afterwards."""
    port = free_port()
    with listening([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--host", "127.0.0.1",
                    "--port", str(port), "--artifacts-destination", str(artifacts), "--workers", "1"],
                   port, "/health", Path(artifacts).parent / f"mlflow-server-{port}.log", env) as url:
        yield url


@contextlib.contextmanager
def model_server(model_uri, env, log_path, workers=1):
    """`mlflow models serve -m model_uri` (local environment: this venv) on 127.0.0.1:<free
    port); yields its URL once it answers /ping. Stopped (its whole process group) afterwards."""
    port = free_port()
    with listening([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "-h", "127.0.0.1",
                    "-p", str(port), "--env-manager", "local", "-w", str(workers)],
                   port, "/ping", log_path, env) as url:
        yield url


@contextlib.contextmanager
def listening(command, port, ready_path, log_path, env, timeout=240):
    """Run `command` (a server on 127.0.0.1:port) in a process group of its own, logging to
    log_path; yield its URL once GET ready_path answers 200; stop the whole group afterwards."""
    log = open(log_path, "a")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{command[3]} exited {server.returncode}: {Path(log.name).read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}{ready_path}", timeout=2).status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[3]} did not answer in {timeout} s: {Path(log.name).read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
