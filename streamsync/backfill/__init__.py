"""Backfill: the table → Bulk Write jobs, chunk by chunk, resumable, consistent with the stream.

Pure cores: :mod:`.chunks` (keyset cursor, chunk records, digests, resync plan, progress) and
:mod:`.rows` (asyncpg values → canonical values). Shells: :mod:`.read` (keyset SELECT),
:mod:`.resync` (re-read + resync events), :mod:`.role` (``BackfillWorker``), :mod:`.status`.
"""

from __future__ import annotations

__all__: list[str] = []
