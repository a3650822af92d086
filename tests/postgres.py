"""A throwaway PostgreSQL server for tests (the tune study test, the several-machine test): trust auth on
127.0.0.1, a temporary data directory, fsync off. Skips the test, with one line saying why, when the
server binaries or the driver are absent (Debian: apt-get install postgresql; .ci/run does it)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


@contextlib.contextmanager
def throwaway_server() -> Iterator[str]:
    """Start a server; yield the URL of its `postgres` database; stop it and delete its files."""
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver is the `postgres` extra (also in `dev`)")
    bindir = server_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are absent: apt-get install postgresql")
    prefix: list[str] = []
    user = None
    if os.geteuid() == 0:  # initdb refuses to run as root: the server runs as the postgres user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
    root = Path(tempfile.mkdtemp(prefix="cxraug-pg-"))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "cxraug", "--auth=trust", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off"
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "start")
    try:
        yield f"postgresql://cxraug@127.0.0.1:{port}/postgres"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """A new, empty database on the server of `server_url`; its URL. (MLflow and Optuna each need their
    own: both keep an `alembic_version` table.)"""
    import psycopg2

    connection = psycopg2.connect(server_url)
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
