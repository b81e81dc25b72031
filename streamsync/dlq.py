"""Dead letters: the record format on ``<prefix>.dlq`` and the publish / list / replay helpers.

Shared by the sink and the backfill worker. A dead letter is one JSON object (orjson):

    {"v": 1,
     "origin": "sink" | "backfill" | ...,
     "reason_code": "INVALID_DATA",          # Zoho's code, or UNDECODABLE, UNMAPPABLE_VALUE, ...
     "message": "...",                        # never a secret; may name the field
     "details": {...},                        # Zoho's details (api_name, json_path, ...)
     "attempts": 1,
     "table": "public.orders" | null,
     "key": [42] | null,
     "event": {<change event JSON>} | null,   # the original event, replayable as is
     "raw": "<base64>" | null,                # the raw Kafka value when it could not be decoded
     "source": {"topic": ..., "partition": ..., "offset": ...} | null,
     "ts_ms": 1733212345678}

The Kafka key is the event's key bytes (so one key's dead letters stay in order), or the raw
key of an undecodable message. ``replay`` re-publishes the original events to their change topic
(key = the event key, so per-key order holds with newer changes); progress is kept by the consumer
group ``<prefix>.dlq-replay`` so a second replay only re-sends new dead letters.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from streamsync.errors import DecodeError
from streamsync.events import ChangeEvent, decode_change, encode_change
from streamsync.kafka.topics import change_topic, dlq_topic

__all__ = [
    "DeadLetter",
    "decode_dead_letter",
    "encode_dead_letter",
    "list_dead_letters",
    "publish_dead_letter",
    "replay_dead_letters",
]

FORMAT_VERSION = 1


class _Producer(Protocol):
    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One decoded dead letter."""

    origin: str
    reason_code: str
    message: str
    details: dict[str, Any]
    attempts: int
    table: str | None
    key: list[Any] | None
    event: dict[str, Any] | None
    raw: bytes | None
    source: dict[str, Any] | None
    ts_ms: int
    offset: int = -1  # offset on the DLQ topic, when read from it

    def change_event(self) -> ChangeEvent | None:
        """The original event, or None for an undecodable message."""
        if self.event is None:
            return None
        return decode_change(orjson.dumps(self.event))


def encode_dead_letter(
    *,
    event_or_raw: ChangeEvent | bytes | None,
    reason_code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    attempts: int = 1,
    origin: str = "sink",
    source: Mapping[str, Any] | None = None,
    now_ms: int | None = None,
) -> tuple[bytes | None, bytes]:
    """Build the (Kafka key, value) of a dead letter. Pure."""
    event: dict[str, Any] | None = None
    raw: str | None = None
    table: str | None = None
    key: list[Any] | None = None
    kafka_key: bytes | None = None
    if isinstance(event_or_raw, ChangeEvent):
        event = event_or_raw.to_json()
        table = event_or_raw.table
        key = event_or_raw.key
        kafka_key = event_or_raw.key_bytes
    elif isinstance(event_or_raw, bytes | bytearray):
        raw = base64.b64encode(bytes(event_or_raw)).decode("ascii")
    if kafka_key is None and source is not None and isinstance(source.get("key"), bytes):
        kafka_key = source["key"]
    src = None
    if source is not None:
        src = {k: v for k, v in source.items() if k != "key"}
    value = {
        "v": FORMAT_VERSION,
        "origin": origin,
        "reason_code": reason_code,
        "message": message,
        "details": dict(details or {}),
        "attempts": attempts,
        "table": table,
        "key": key,
        "event": event,
        "raw": raw,
        "source": src,
        "ts_ms": int(time.time() * 1000) if now_ms is None else now_ms,
    }
    return kafka_key, orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str)


def decode_dead_letter(value: bytes | None, offset: int = -1) -> DeadLetter:
    """Parse a dead letter; DecodeError when it is not one."""
    if value is None:
        raise DecodeError("empty dead letter")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"dead letter is not JSON: {exc}") from None
    if not isinstance(data, dict) or "reason_code" not in data:
        raise DecodeError("not a dead letter object")
    raw = data.get("raw")
    return DeadLetter(
        origin=str(data.get("origin", "?")),
        reason_code=str(data["reason_code"]),
        message=str(data.get("message", "")),
        details=dict(data.get("details") or {}),
        attempts=int(data.get("attempts") or 1),
        table=data.get("table"),
        key=data.get("key"),
        event=data.get("event"),
        raw=base64.b64decode(raw) if isinstance(raw, str) else None,
        source=data.get("source"),
        ts_ms=int(data.get("ts_ms") or 0),
        offset=offset,
    )


async def publish_dead_letter(
    producer: Any,
    prefix: str,
    *,
    event_or_raw: ChangeEvent | bytes | None,
    reason_code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    attempts: int = 1,
    origin: str = "sink",
    source: Mapping[str, Any] | None = None,
) -> None:
    """Produce one dead letter to ``<prefix>.dlq`` and wait for Kafka's ack.

    ``producer`` is a started aiokafka producer (anything with ``send_and_wait``).
    ``source`` may carry ``topic``, ``partition``, ``offset`` and the raw ``key`` bytes.
    Raises whatever the producer raises (the caller must not commit past the event then).
    Cancelling may leave the record produced or not; the caller then does not commit.
    """
    key, value = encode_dead_letter(
        event_or_raw=event_or_raw,
        reason_code=reason_code,
        message=message,
        details=details,
        attempts=attempts,
        origin=origin,
        source=source,
    )
    await producer.send_and_wait(dlq_topic(prefix), value=value, key=key)


async def _read_topic(
    client_options: Mapping[str, Any],
    topic: str,
    *,
    group_id: str | None,
    limit: int | None = None,
) -> tuple[Any, list[Any]]:
    """Read ``topic`` from the committed (or earliest) offsets to the end offsets seen at start.

    Returns the started consumer (caller commits/stops it) and the messages read.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        **client_options,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return consumer, []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, msgs in batch.items():
                for msg in msgs:
                    if msg.offset < ends[tp]:
                        out.append(msg)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if limit is not None and len(out) >= limit:
                break
        return consumer, out
    except BaseException:
        await consumer.stop()
        raise


async def list_dead_letters(
    client_options: Mapping[str, Any], prefix: str, *, limit: int | None = None
) -> list[DeadLetter]:
    """Every dead letter on ``<prefix>.dlq`` (oldest first), up to ``limit``."""
    consumer, msgs = await _read_topic(client_options, dlq_topic(prefix), group_id=None)
    await consumer.stop()
    out: list[DeadLetter] = []
    for msg in msgs:
        try:
            out.append(decode_dead_letter(msg.value, msg.offset))
        except DecodeError:
            continue
        if limit is not None and len(out) >= limit:
            break
    return out


async def replay_dead_letters(
    client_options: Mapping[str, Any],
    prefix: str,
    *,
    reason_code: str | None = None,
    origin: str | None = None,
) -> tuple[int, int]:
    """Re-publish dead-lettered change events to their change topic.

    Progress is committed under the group ``<prefix>.dlq-replay`` (after every re-publish was
    acked): each dead letter is replayed once. Undecodable raw messages, which can never be
    replayed, are passed over for good. A letter a filter (``reason_code``, ``origin``) passes
    over stops the commit on its partition, so a later replay still sees it; letters after it
    that this run replayed are then replayed again by that later run (harmless: an upsert of
    the same version, or a version the record map already holds). Returns (replayed,
    passed_over).
    """
    from aiokafka import AIOKafkaProducer, TopicPartition

    consumer, msgs = await _read_topic(
        client_options, dlq_topic(prefix), group_id=f"{prefix}.dlq-replay"
    )
    producer = AIOKafkaProducer(**client_options, acks="all", enable_idempotence=True)
    replayed = passed = 0
    try:
        await producer.start()
        ends: dict[Any, int] = {}  # per partition: the next offset a later replay needs
        held: set[Any] = set()  # partitions where a filter passed a letter over
        for msg in msgs:
            tp = TopicPartition(msg.topic, msg.partition)
            try:
                letter = decode_dead_letter(msg.value, msg.offset)
            except DecodeError:
                letter = None
            if letter is not None and (
                (reason_code and letter.reason_code != reason_code)
                or (origin and letter.origin != origin)
            ):
                passed += 1
                held.add(tp)  # left for a later replay: the commit stops before it
                continue
            event = letter.change_event() if letter is not None else None
            if event is None:
                passed += 1  # raw or undecodable: never replayable
            else:
                await producer.send_and_wait(
                    change_topic(prefix, event.table),
                    value=encode_change(event),
                    key=event.key_bytes,
                )
                replayed += 1
            if tp not in held:
                ends[tp] = msg.offset + 1
        if ends:
            await consumer.commit(ends)
    finally:
        await producer.stop()
        await consumer.stop()
    return replayed, passed


def dead_letter_summary(letters: list[DeadLetter]) -> dict[str, int]:
    """Counts per reason code (for `dlq list` and `status`)."""
    out: dict[str, int] = {}
    for letter in letters:
        out[letter.reason_code] = out.get(letter.reason_code, 0) + 1
    return out
