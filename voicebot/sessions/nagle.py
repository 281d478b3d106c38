"""Nagle's algorithm off on the LiveKit SDK's signalling socket, so a small request is sent when it is made.

The Rust core of the LiveKit SDK opens its signalling WebSocket (tokio-tungstenite's `connect_async`) without
TCP_NODELAY. Under Nagle a small message that follows another still unacknowledged one waits for that ACK,
and livekit-server's kernel delays its ACK up to 40 ms when it has nothing to send back. An agent that
publishes its voice right after joining hits exactly that: the trickled ICE candidate that ends the join is
unacknowledged, so the AddTrack request sat in the kernel for 35-45 ms (measured from livekit-server's log),
and every join paid it before the greeting could start. Browsers set TCP_NODELAY on their sockets.

The SDK does not expose its socket, so it is found among this process's file descriptors by its peer port.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

# Where this process's open descriptors are listed: Linux and macOS both have /dev/fd.
_FD_DIR = "/dev/fd"
_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


def server_port(url: str) -> int:
    """The TCP port a LiveKit URL (ws://, wss://, http://, https://) connects to."""
    parts = urlsplit(url)
    return parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)


def turn_off_nagle(port: int) -> int:
    """Set TCP_NODELAY on this process's TCP sockets connected to `port` that lack it; how many were set.

    Setting it also sends at once whatever Nagle was holding back. Any other socket to that port gets the same
    option, which is harmless (aiohttp sets it on its own connections).
    """
    changed = 0
    for _, sock in tcp_sockets_to(port):
        try:
            if not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                changed += 1
        except OSError:
            pass  # closed under us by its owner
    return changed


def nodelay_by_descriptor(port: int) -> dict[int, bool]:
    """This process's TCP sockets connected to `port`: descriptor -> whether TCP_NODELAY is set."""
    found: dict[int, bool] = {}
    for fd, sock in tcp_sockets_to(port):
        with contextlib.suppress(OSError):  # closed under us by its owner
            found[fd] = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return found


def tcp_sockets_to(port: int) -> Iterator[tuple[int, socket.socket]]:
    """This process's TCP sockets connected to `port`, as (descriptor, a wrapper valid until the next one)."""
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return
    for name in names:
        try:
            sock = socket.socket(fileno=int(name))
        except (OSError, ValueError):
            continue  # not a socket, or already closed
        try:
            if _is_tcp_to(sock, port):
                yield int(name), sock
        finally:
            # The descriptor belongs to its owner: only our wrapper goes away.
            sock.detach()


def _is_tcp_to(sock: socket.socket, port: int) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return False
    try:
        peer = sock.getpeername()
    except OSError:
        return False  # listening or not connected
    return int(peer[1]) == port
