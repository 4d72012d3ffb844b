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


@contextlib.contextmanager
def mariadb(root: Path, database: str = "fmnist_mlmd") -> Iterator[str]:
    """A running server with an empty `database`; yields the `--metadata-mysql` address for it."""
    import pymysql

    install, server = binaries()
    data, port = root / "data", portpicker.pick_unused_port()
    subprocess.run(
        [install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
         "--skip-test-db", "--user=root"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    process = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={data}", f"--socket={root / 'mysqld.sock'}", f"--port={port}",
         "--bind-address=127.0.0.1", "--user=root", f"--pid-file={root / 'mysqld.pid'}",
         f"--log-error={root / 'error.log'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
                break
            except pymysql.MySQLError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "error.log").read_text()[-2000:]) from None
                time.sleep(0.2)
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
