"""Our murmur2 partitioner equals aiokafka's (and so the Java client's) on every key."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from streamsync.capture.partition import murmur2, partition_for
from streamsync.events import encode_key


def test_murmur2_matches_aiokafka_on_random_keys() -> None:
    rng = random.Random(42)
    keys = [rng.randbytes(rng.randint(0, 40)) for _ in range(5000)]
    keys += [encode_key([i]) for i in range(2000)] + [encode_key(["a", i]) for i in range(50)]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key
        for n in (1, 3, 6, 7, 64):
            assert partition_for(key, n) == DefaultPartitioner()(key, list(range(n)), [])


def test_known_java_values() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    assert murmur2(b"21") & 0x7FFFFFFF == (-973932308) & 0x7FFFFFFF
    assert murmur2(b"abc") & 0x7FFFFFFF == 479470107
