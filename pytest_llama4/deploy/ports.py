"""TCP port helpers for launched services."""

from __future__ import annotations

import random
import socket

# Below the kernel's ephemeral range (so no outgoing connection takes them meanwhile) and below 32768,
# because Dynamo reads DYN_SYSTEM_PORT as a signed 16-bit integer.
PORT_RANGE = (20000, 32767)


def free_port(host: str = "127.0.0.1", exclude: frozenset[int] = frozenset()) -> int:
    """A port in PORT_RANGE that is free right now and not in `exclude`."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if port not in exclude and not port_in_use(port, host):
            return port
    raise RuntimeError(f"no free TCP port in {PORT_RANGE} on {host}")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False
