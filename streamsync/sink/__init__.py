"""The sink: Kafka change topics -> window -> credit planner -> Zoho CRM (``streamsync sink``).

Pure modules: ``window``, ``planner``, ``outcomes``, ``offsets``. Shells: ``consume`` (aiokafka),
``role`` (``Sink.run()/stop()/drain()``). ``Sink`` is imported lazily so that importing a pure
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
