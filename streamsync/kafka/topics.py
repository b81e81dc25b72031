"""Topic names: changes `<prefix>.<schema>.<table>`, `<prefix>.control`, `<prefix>.dlq`. Pure."""

from __future__ import annotations

__all__ = ["change_topic", "control_topic", "dlq_topic", "table_of_topic"]


def change_topic(prefix: str, source: str) -> str:
    """`streamsync` + `public.orders` → `streamsync.public.orders`."""
    return f"{prefix}.{source}"


def control_topic(prefix: str) -> str:
    return f"{prefix}.control"


def dlq_topic(prefix: str) -> str:
    return f"{prefix}.dlq"


def table_of_topic(prefix: str, topic: str) -> str | None:
    """The `schema.table` a change topic carries, or None when it is not a change topic."""
    head = prefix + "."
    if not topic.startswith(head):
        return None
    rest = topic[len(head) :]
    return rest if rest.count(".") == 1 else None
