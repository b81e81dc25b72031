"""The sink: Kafka change topics -> window -> credit planner -> Zoho CRM (``streamsync sink``).

Pure modules: ``window``, ``planner``, ``outcomes``, ``offsets``, ``stats``. Shells: ``consume``
(aiokafka), ``writer`` (step 1: the CRM outcome of a batch), ``finalize`` (steps 2-4: dead
letters, record map, offsets), ``writeback`` (the optional sync flag), ``role``
(``Sink.run()/stop()/drain()``: the consume loop, rebalances, commits, the credit planner). ``Sink`` is imported lazily so that importing a pure
module never pulls in asyncio clients.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DrainIncomplete", "Sink"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from streamsync.sink import role

        return getattr(role, name)
    raise AttributeError(name)
