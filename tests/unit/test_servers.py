"""The suite's port picker: bindable ports, each handed out once, in runs where a program needs them."""

from __future__ import annotations

import socket

from tests.servers import free_ports


def test_a_run_of_ports_is_free_on_every_port_and_never_handed_out_again() -> None:
    """Regression: sipp binds its media port and the three after it, and exited 254 ("Unable to bind video
    RTP socket") when only the first had been checked."""
    blocks = [free_ports(4, socket.SOCK_DGRAM) for _ in range(50)]
    ports = [port for first in blocks for port in range(first, first + 4)]

    assert len(set(ports)) == len(ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", port))
