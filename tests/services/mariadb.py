"""A throwaway MariaDB server for tests: a temporary data directory, a loopback port, stopped after.

Uses Debian's MariaDB binaries (`mariadb-server-core`, `mariadb-client-core`:
`scripts/setup.sh` installs them, without any system service); nothing of a
system MariaDB service is touched.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import portpicker

SERVER_CANDIDATES = ("/usr/sbin/mariadbd", "/usr/sbin/mysqld")


def binaries() -> tuple[str, str]:
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    server = next((c for c in SERVER_CANDIDATES if Path(c).exists()), None)
    if install is None or server is None:
        raise RuntimeError(
            "MariaDB is not installed: `apt-get install mariadb-server-core mariadb-client-core` "
            "(scripts/setup.sh does)"
        )
    return install, server


BIND_ATTEMPTS = 5  # a port picked free can be taken by another process before the server binds it
PORT_TAKEN = "Address already in use"


def server_command(server: str, data: Path, root: Path, port: int) -> list[str]:
    return [
        server, "--no-defaults", f"--datadir={data}", f"--socket={root / 'mysqld.sock'}", f"--port={port}",
        "--bind-address=127.0.0.1", "--user=root", f"--pid-file={root / 'mysqld.pid'}",
        f"--log-error={root / 'error.log'}",
    ]  # fmt: skip


def connect(process: subprocess.Popen, port: int):
    """A connection once the server answers; None if it exited or did not answer within a minute."""
    import pymysql

    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() <= deadline:
        try:
            # A read timeout too: whatever else holds the port may accept and never greet.
            return pymysql.connect(host="127.0.0.1", port=port, user="root", password="", read_timeout=10)
        except pymysql.MySQLError:
            time.sleep(0.2)
    return None


def started(server: str, data: Path, root: Path):
    """The server on a free loopback port, and a connection to it: a new port when the one picked was
    taken before the server could bind it (seen in a test run on a busy host: errno 98)."""
    log = root / "error.log"
    for _ in range(BIND_ATTEMPTS):
        port, seen = portpicker.pick_unused_port(), log.stat().st_size if log.exists() else 0
        process = subprocess.Popen(
            server_command(server, data, root, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        connection = connect(process, port)
        if connection is not None:
            return process, port, connection
        process.kill()
        process.wait()
        this_start = log.read_bytes()[seen:].decode(errors="replace") if log.exists() else ""
        if PORT_TAKEN not in this_start:
            raise RuntimeError(this_start[-2000:])
    raise RuntimeError(f"MariaDB: each of {BIND_ATTEMPTS} free ports picked was taken before it bound")


@contextlib.contextmanager
def mariadb(root: Path, database: str = "fmnist_mlmd") -> Iterator[str]:
    """A running server with an empty `database`; yields the `--metadata-mysql` address for it."""
    install, server = binaries()
    data = root / "data"
    subprocess.run(
        [install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
         "--skip-test-db", "--user=root"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    process, port, connection = started(server, data, root)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database}")
        connection.close()
        yield f"root@127.0.0.1:{port}/{database}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
