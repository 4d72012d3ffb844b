"""The throwaway MariaDB the metadata tests run on starts even when its first port is taken."""

import socket

import portpicker

from tests.services import mariadb


def test_a_port_taken_before_the_server_binds_it_is_replaced_by_another(tmp_path, monkeypatch):
    """On a busy host a port picked free can be bound by another process first (seen in a test
    run: `Address already in use`, five tests in error); the server then starts on another."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks = iter([taken.getsockname()[1]])
    pick = portpicker.pick_unused_port
    monkeypatch.setattr(mariadb.portpicker, "pick_unused_port", lambda: next(picks, None) or pick())
    with taken, mariadb.mariadb(tmp_path) as address:
        assert not address.endswith(f":{taken.getsockname()[1]}/fmnist_mlmd")
        assert mariadb.PORT_TAKEN in (tmp_path / "error.log").read_text()
