"""The idempotent producer every role uses (acks=all, enable_idempotence)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from streamsync.settings import KafkaSettings

__all__ = ["create_producer"]


def create_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """An unstarted idempotent producer (acks=all) for ``settings``; ``overrides`` win.

    Idempotence makes the broker drop the duplicates a retried batch would create, and keeps
    per-partition order across retries.
    """
    options: dict[str, Any] = {
        **settings.client_options(),
        "client_id": settings.client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
        "compression_type": None,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)
