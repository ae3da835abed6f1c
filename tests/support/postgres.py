"""A throw-away PostgreSQL server for the records tests: Debian's ``postgresql`` binaries,
a fresh cluster in a temporary folder, listening on a free loopback port only.

``scripts/install-postgres.sh`` (run by ``scripts/test.sh``) installs the package. As
root, the cluster is made and run by the ``postgres`` user the package creates (the
server refuses to run as root), in a folder that user owns; otherwise by the current
user. Outside CI a machine without the binaries skips the PostgreSQL variant of the
tests; in CI (``CI=true``) it fails them, so the variant cannot silently stop running.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.loopback import free_port

SEARCH = ("/usr/lib/postgresql",)


def find_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian's newest, else on PATH."""
    versions = sorted(
        (p for root in SEARCH for p in Path(root).glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable(reason: str) -> None:
    """Skip, or fail in CI where the server is installed by the project's scripts."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason} (bash scripts/install-postgres.sh)")


@dataclass
class PostgresServer:
    """One cluster: start, stop (to test an outage) and fresh databases."""

    bindir: Path
    folder: Path
    port: int
    user: str | None  # run as this user (root's case), else as ourselves

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(
            command, check=True, capture_output=True, text=True, cwd=self.folder, timeout=120
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", "server.log", "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_server() -> PostgresServer:
    """A running server in a new folder (the caller stops it and removes the folder)."""
    bindir = find_bindir()
    if bindir is None:
        unavailable("no initdb (Debian package postgresql)")
    assert bindir is not None
    user = None
    folder = Path(tempfile.mkdtemp(prefix="bonefrac-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            unavailable("running as root and there is no 'postgres' user to run the server")
        user = "postgres"
        os.chown(folder, account.pw_uid, account.pw_gid)
    folder.chmod(0o755)
    server = PostgresServer(bindir=bindir, folder=folder, port=free_port(), user=user)
    try:
        server.init()
        server.start()
    except subprocess.CalledProcessError as exc:
        log = folder / "server.log"
        detail = log.read_text() if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr}\n{detail[-2000:]}")
    return server


def remove(server: PostgresServer) -> None:
    with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
        server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)
