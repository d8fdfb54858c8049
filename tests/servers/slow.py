"""Slow clients: many connections that send half a request and then wait."""

from __future__ import annotations

import contextlib
import http.client
import socket
from collections.abc import Iterator

__all__ = ["get_status", "half_open_connections"]


@contextlib.contextmanager
def half_open_connections(port: int, count: int = 200,
                          host: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    """Hold ``count`` connections to ``host:port``, each with a request line and one
    header sent but never the blank line that ends the headers."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            # A generous connect timeout: with a small listen backlog the
            # kernel makes later connects wait (the old server took 27.7 s).
            sock = socket.create_connection((host, port), timeout=60)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
            held.append(sock)
        yield held
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()


def get_status(port: int, path: str, timeout: float = 30.0,
               host: str = "127.0.0.1") -> int:
    """Status of ``GET path``; raises OSError (e.g. a timeout) when it does not answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
