"""
Ports for servers the tests start on loopback.
"""

import socket


def free_port():
    """
    @return: a TCP port of 127.0.0.1 nobody listens on now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
