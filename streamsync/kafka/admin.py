"""Kafka administration for `setup` and `status`: idempotent topic creation, end offsets."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streamsync.errors import PublishError
from streamsync.kafka.topics import change_topic, control_topic, dlq_topic
from streamsync.settings import KafkaSettings, TableSettings

__all__ = ["end_offsets", "ensure_topics", "project_topics"]

log = logging.getLogger("streamsync.kafka")


def project_topics(settings: KafkaSettings, tables: Iterable[TableSettings]) -> list[str]:
    """Every topic the project owns: one change topic per table, control, dlq."""
    names = [change_topic(settings.topic_prefix, t.source) for t in tables]
    return [*names, control_topic(settings.topic_prefix), dlq_topic(settings.topic_prefix)]


async def ensure_topics(
    settings: KafkaSettings, topics: Sequence[str], *, partitions: int | None = None
) -> list[str]:
    """Create the missing ``topics`` with the configured partitions and replication factor.

    Idempotent: existing topics are left as they are. Returns the names it created.

    Raises:
        PublishError: the broker refused or could not be reached.
    """
    admin = AIOKafkaAdminClient(**settings.client_options(), request_timeout_ms=30_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                name=t,
                num_partitions=partitions or settings.partitions,
                replication_factor=settings.replication_factor,
            )
            for t in missing
        ]
        try:
            response = await admin.create_topics(new)
        except TopicAlreadyExistsError:
            return []
        created: list[str] = []
        for item in getattr(response, "topic_errors", []) or []:
            name, code = item[0], item[1]
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                raise PublishError(f"cannot create topic {name!r}: error code {code}")
        log.info("topics created", extra={"topics": created})
        return created
    except KafkaError as exc:
        raise PublishError(f"topic administration failed: {type(exc).__name__}") from exc
    finally:
        await admin.close()


async def end_offsets(settings: KafkaSettings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The end offset of every partition of ``topics`` (missing topics are skipped)."""
    consumer = AIOKafkaConsumer(**settings.client_options(), enable_auto_commit=False)
    try:
        await consumer.start()
        partitions: list[TopicPartition] = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic)
            partitions.extend(TopicPartition(topic, p) for p in sorted(parts or ()))
        if not partitions:
            return {}
        result: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return result
    except KafkaError as exc:
        raise PublishError(f"cannot read end offsets: {type(exc).__name__}") from exc
    finally:
        await consumer.stop()
