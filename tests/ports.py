"""Free loopback ports for the services and processes the tests start."""

from __future__ import annotations

import socket
from contextlib import ExitStack, closing


def free_loopback_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that are free on 127.0.0.1 right now.

    All sockets stay bound until every port is chosen, so the kernel never hands out one twice.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports
