"""Readiness probe for the local Kafka broker: one Metadata request (v4), stdlib only.

Usage: python3 dev/lib/kafka_ready.py HOST PORT
Exit 0 when the broker answers a Metadata request listing at least one broker, 1 otherwise.
No third-party imports so it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import socket
import struct
import sys


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def metadata_brokers(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    client_id = b"streamsync-dev-stack"
    # request header v1: api_key=3 (Metadata), api_version=4, correlation_id, client_id
    header = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id
    # body v4: topics = [] (no topics, just brokers), allow_auto_topic_creation = false
    body = struct.pack(">ib", 0, 0)
    payload = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", _read_exact(sock, 4))
        data = _read_exact(sock, size)
    correlation_id, _throttle, n_brokers = struct.unpack_from(">iii", data, 0)
    if correlation_id != 7:
        raise ValueError("unexpected correlation id")
    off = 12
    brokers = []
    for _ in range(n_brokers):
        node_id, hlen = struct.unpack_from(">ih", data, off)
        off += 6
        bhost = data[off : off + hlen].decode()
        off += hlen
        (bport, rlen) = struct.unpack_from(">ih", data, off)
        off += 6 + max(rlen, 0)
        brokers.append((node_id, bhost, bport))
    return brokers


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        brokers = metadata_brokers(host, port)
    except (OSError, ValueError, struct.error) as exc:
        print(f"kafka not ready: {exc}", file=sys.stderr)
        return 1
    if not brokers:
        print("kafka not ready: no brokers in metadata", file=sys.stderr)
        return 1
    print(f"kafka ready: brokers={brokers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
