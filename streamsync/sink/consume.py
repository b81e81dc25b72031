"""The aiokafka consumer of the sink and its rebalance listener. Thin: no decisions.

Manual commits only (``enable_auto_commit=False``); ``auto_offset_reset="earliest"`` so a new
group starts at the beginning of the change topics; ``read_committed`` so aborted producer
transactions are never synced. ``rebalance_timeout_ms`` covers a revoke-time flush
(``REVOKE_BUDGET_S``, one Zoho call with its retries), and ``max_poll_interval_ms`` is larger
still: the loop keeps polling (paused partitions included) during long work, so it is only
hit if the loop itself is stuck.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from streamsync.settings import KafkaSettings, SinkSettings

__all__ = ["REVOKE_BUDGET_S", "Listener", "create_consumer"]

# A revoke flush: the open window's calls and their retries. Kafka's rebalance timeout
# must exceed it, or the member is dropped from the group mid-flush (aiokafka #848).
REVOKE_BUDGET_S = 45.0


def create_consumer(kafka: KafkaSettings, sink: SinkSettings, **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        **kafka.client_options(),
        "client_id": f"{kafka.client_id}-sink",
        "group_id": sink.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "session_timeout_ms": 10_000,  # a killed member is evicted within 10 s
        "heartbeat_interval_ms": 3_000,
        "rebalance_timeout_ms": int((REVOKE_BUDGET_S + 15) * 1000),
        "max_poll_interval_ms": 600_000,
        "max_poll_records": 2_000,
        "fetch_max_wait_ms": 100,
    }
    options.update(overrides)
    return AIOKafkaConsumer(**options)


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards rebalance callbacks to the role (which flushes and commits on revoke)."""

    def __init__(
        self,
        on_revoked: Callable[[set[Any]], Awaitable[None]],
        on_assigned: Callable[[set[Any]], Awaitable[None]],
    ) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._on_assigned(set(assigned))
