"""Kafka's default key partitioning (murmur2, as the Java client and aiokafka), faster. Pure.

``partition_for(key, n)`` equals aiokafka's ``DefaultPartitioner()(key, range(n), ...)`` for
every key (tests/unit/capture/test_partition.py checks it on random keys): every producer of
streamsync must put a key on the same partition, or per-key order breaks.
"""

from __future__ import annotations

import struct

__all__ = ["murmur2", "partition_for"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
# Little-endian 32-bit word layouts for keys up to 255 bytes, compiled once (hot path).
_WORDS = tuple(struct.Struct(f"<{n}I").unpack_from for n in range(64))


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747B28C) of ``data`` as an unsigned 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    words = length >> 2
    if words:
        unpack = _WORDS[words] if words < 64 else struct.Struct(f"<{words}I").unpack_from
        for k in unpack(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = length & ~3
        if tail >= 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition (0-based) Kafka's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
