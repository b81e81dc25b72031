"""`streamsync status` rendering and JSON shape (pure: no I/O)."""

from __future__ import annotations

import io

import orjson
from rich.console import Console

from streamsync.status import Section, StatusReport, render


def _text(report: StatusReport) -> str:
    out = io.StringIO()
    render(report, Console(file=out, width=200, color_system=None))
    return out.getvalue()


def _full() -> StatusReport:
    return StatusReport(
        [
            Section(
                "slot",
                "ok",
                {
                    "slot": "s1",
                    "active": True,
                    "lag_bytes": 3 * 1024 * 1024,
                    "confirmed_flush_lsn": "0/16B3748",
                    "restart_lsn": "0/16B3710",
                    "wal_status": "reserved",
                },
            ),
            Section(
                "consumer_lag",
                "ok",
                {
                    "group": "g1",
                    "total": 7,
                    "partitions": [
                        {
                            "topic": "p.public.o",
                            "partition": 0,
                            "end": 10,
                            "committed": 5,
                            "lag": 5,
                        },
                        {
                            "topic": "p.public.o",
                            "partition": 1,
                            "end": 2,
                            "committed": None,
                            "lag": 2,
                        },
                    ],
                },
            ),
            Section("dlq", "ok", {"topic": "p.dlq", "messages": 4, "partitions": 6}),
            Section(
                "backfills",
                "ok",
                {
                    "backfills": [
                        {
                            "backfill_id": "b-1",
                            "table": "public.o",
                            "status": "running",
                            "chunks_done": 2,
                            "chunks_total": 5,
                            "rows": 50_000,
                            "skipped": 3,
                            "dead_lettered": 1,
                            "credits": 1000,
                            "error": None,
                        }
                    ]
                },
            ),
            Section(
                "record_map", "ok", {"counts": {"ok": 9, "failed": 1, "deleted": 2}, "total": 12}
            ),
            Section(
                "credits",
                "ok",
                {
                    "backfills_total": 1000,
                    "per_backfill": {"b-1": 1000},
                    "daily_used": 700,
                    "budget": 5000,
                    "note": "why",
                },
            ),
        ]
    )


def test_every_section_is_rendered() -> None:
    text = _text(_full())
    assert "s1" in text and "3.0 MiB" in text and "0/16B3748" in text and "yes" in text
    assert "group g1, total 7" in text
    assert "4 messages on p.dlq" in text
    assert "b-1" in text and "2/5" in text and "50000" in text
    assert "9" in text and "12" in text
    assert "credits: daily used 700 of 5000 (why); backfills 1000" in text
    assert _full().ok


def test_json_is_one_object_with_every_section() -> None:
    data = orjson.loads(orjson.dumps(_full().to_json()))
    assert data["ok"] is True
    assert data["slot"] == {
        "state": "ok",
        "slot": "s1",
        "active": True,
        "lag_bytes": 3 * 1024 * 1024,
        "confirmed_flush_lsn": "0/16B3748",
        "restart_lsn": "0/16B3710",
        "wal_status": "reserved",
    }
    assert [p["lag"] for p in data["consumer_lag"]["partitions"]] == [5, 2]
    assert data["dlq"]["messages"] == 4
    assert data["credits"]["daily_used"] == 700
    assert set(data) == {"ok", "slot", "consumer_lag", "dlq", "backfills", "record_map", "credits"}


def test_absent_parts_say_absent_and_are_not_errors() -> None:
    report = StatusReport(
        [
            Section("slot", "absent", {"slot": "gone"}),
            Section(
                "consumer_lag",
                "absent",
                {"group": "g", "total": 0, "partitions": [], "topics_absent": ["p.public.o"]},
            ),
            Section("dlq", "absent", {"topic": "p.dlq"}),
            Section("backfills", "ok", {"backfills": []}),
            Section("record_map", "absent", {"schema": "st"}),
        ]
    )
    text = _text(report)
    assert "slot 'gone' absent" in text
    assert "topic p.public.o absent" in text
    assert "topic p.dlq absent" in text
    assert "backfills: none" in text
    assert "record map in schema 'st' absent" in text
    assert report.ok
    assert report.to_json()["slot"]["state"] == "absent"


def test_an_unreadable_section_is_an_error_line_and_fails_the_report() -> None:
    report = StatusReport(
        [
            Section("slot", "absent", {"slot": "s"}),
            Section("dlq", "error", {"topic": "p.dlq"}, "kafka: KafkaConnectionError: down"),
        ]
    )
    text = _text(report)
    assert "dlq: error: kafka: KafkaConnectionError: down" in text
    assert "Traceback" not in text
    assert not report.ok
    assert report.to_json()["ok"] is False
    assert report.to_json()["dlq"]["error"] == "kafka: KafkaConnectionError: down"
