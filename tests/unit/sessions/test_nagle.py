"""turn_off_nagle sets TCP_NODELAY on this process's TCP sockets to one port, and on nothing else."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from voicebot.sessions.nagle import server_port, turn_off_nagle


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("ws://127.0.0.1:7880", 7880),
        ("wss://voice.example.com", 443),
        ("ws://voice.example.com", 80),
        ("https://voice.example.com:8443", 8443),
        ("http://localhost", 80),
    ],
)
def test_the_port_is_the_urls_or_its_schemes_default(url: str, port: int) -> None:
    assert server_port(url) == port


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server
    finally:
        server.close()


def nodelay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_connected_socket_to_the_port_gets_nodelay_and_stays_open(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        accepted, _ = listener.accept()
        with accepted:
            assert nodelay(sock) == 0, "a new socket starts with Nagle on"
            assert turn_off_nagle(port) == 1
            assert nodelay(sock) == 1
            # The descriptor still belongs to its owner, open and working.
            sock.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
            assert turn_off_nagle(port) == 0, "a socket that has it already is left alone"


def test_sockets_to_other_ports_listening_sockets_and_udp_are_left_alone(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    other = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", port))
    with other, udp, socket.create_connection(other.getsockname()) as elsewhere:
        assert turn_off_nagle(port) == 0
        assert nodelay(elsewhere) == 0
        assert nodelay(listener) == 0
