"""Deletes per ``on_delete`` and the sink's /metrics, against real Kafka, Postgres and the
simulator (events produced straight to the change topic, as in test_sink.py)."""

from __future__ import annotations

from typing import Any

from streamsync.dlq import list_dead_letters
from streamsync.events import ChangeEvent, Position
from streamsync.ops import metrics
from streamsync.sink import Sink
from tests.integration.test_sink_helpers import SinkEnv, crm_view, sink_env
from tests.plugins import crm_sim as _sim_plugin
from tests.plugins.crm_sim import CrmSim

crm_sim = _sim_plugin.crm_sim  # the fixture


def _row(key: int, version: int) -> dict[str, Any]:
    return {
        "id": key,
        "order_number": f"ORD-{key:08d}-{version}",
        "customer_email": f"c{key}@example.com",
        "amount": "12.50",
        "currency": "EUR",
        "status": "new",
        "notes": None,
    }


def _inserts(env: SinkEnv, keys: range, lsn0: int = 1000) -> list[ChangeEvent]:
    return [
        ChangeEvent("c", env.table, [k], _row(k, 1), Position(lsn0 + i, 0), ts_ms=_now_ms())
        for i, k in enumerate(keys)
    ]


def _deletes(env: SinkEnv, keys: range, lsn0: int) -> list[ChangeEvent]:
    return [
        ChangeEvent("d", env.table, [k], None, Position(lsn0 + i, 0), ts_ms=_now_ms())
        for i, k in enumerate(keys)
    ]


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


async def test_deletes_go_by_zoho_id_in_calls_of_at_most_100(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        await env.produce(_inserts(env, range(1, 401)))
        await Sink(env.settings, until_idle=True).run()
        assert len(crm_view(crm_sim)) == 400

        await env.produce(_deletes(env, range(1, 301), lsn0=5000))
        await Sink(env.settings, until_idle=True).run()

        assert sorted(crm_view(crm_sim), key=int) == [str(k) for k in range(301, 401)]
        per_call = crm_sim.state.records_per_call("delete")
        assert sum(per_call) == 300 and max(per_call) <= 100, per_call
        # every id came from the record map: no search was needed
        assert crm_sim.state.calls_per_api.get("search", 0) == 0


async def test_a_delete_of_a_record_the_map_does_not_know_is_found_by_exact_search(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    """Records written to the CRM by someone else (no record-map row): the delete looks the
    Zoho id up by the unique field, then deletes by id; a key the CRM lacks is done too."""
    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        for k in range(1, 21):
            result = crm_sim.state.write(
                "Orders", {"Name": f"ORD-{k}", "parent_id": str(k)}, "insert", 0
            )
            assert result.ok, result
        await env.produce(_deletes(env, range(1, 11), lsn0=100))
        await env.produce(_deletes(env, range(900, 903), lsn0=200))  # not in the CRM at all
        sink = Sink(env.settings, until_idle=True)
        await sink.run()

        assert sorted(crm_view(crm_sim), key=int) == [str(k) for k in range(11, 21)]
        assert crm_sim.state.calls_per_api["search"] == 13
        assert sum(crm_sim.state.records_per_call("delete")) == 10
        assert sink.stats.dead_letters == 0


async def test_a_delete_whose_search_zoho_refuses_is_a_dead_letter_not_done(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    """A refused search says nothing about whether Zoho holds the record: the delete is
    dead-lettered with Zoho's code (replayable), never taken for 'nothing to delete'."""
    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        for k in range(1, 6):
            result = crm_sim.state.write(
                "Orders", {"Name": f"ORD-{k}", "parent_id": str(k)}, "insert", 0
            )
            assert result.ok, result
        crm_sim.configure(refuse_next_searches=2)
        await env.produce(_deletes(env, range(1, 6), lsn0=100))
        sink = Sink(env.settings, until_idle=True)
        await sink.run()

        assert crm_sim.state.faults["search_refused"] == 2
        letters = await list_dead_letters(env.settings.kafka.client_options(), env.name)
        assert len(letters) == 2 and {x.reason_code for x in letters} == {"INVALID_QUERY"}
        refused = {x.key[0] for x in letters if x.key}
        assert len(refused) == 2
        # the two refused keys are still in the CRM; the other three are gone
        assert sorted(crm_view(crm_sim), key=int) == sorted(str(k) for k in refused)
        assert sink.stats.dead_letters == 2


async def test_on_delete_with_a_field_name_marks_the_record_instead(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with sink_env(
        unique_name, pg_dsn, kafka_bootstrap, crm_sim, table_extra={"on_delete": "Deleted"}
    ) as env:
        await env.produce(_inserts(env, range(1, 51)))
        await Sink(env.settings, until_idle=True).run()
        # synced keys 1-20 are deleted; keys 101-110 are inserted and deleted before the
        # sink sees them (one window): Zoho never held them, so there is nothing to mark
        await env.produce(_deletes(env, range(1, 21), lsn0=5000))
        await env.produce(_inserts(env, range(101, 111), lsn0=6000))
        await env.produce(_deletes(env, range(101, 111), lsn0=7000))
        sink = Sink(env.settings, until_idle=True)
        await sink.run()

        crm = crm_view(crm_sim)
        assert sorted(crm, key=int) == [str(k) for k in range(1, 51)]  # nothing deleted
        marked = {pid for pid, rec in crm.items() if rec.get("Deleted") is True}
        assert marked == {str(k) for k in range(1, 21)}
        assert sink.stats.dead_letters == 0
        assert crm_sim.state.calls_per_api.get("delete", 0) == 0
        # marks went by Zoho id (Update Records); only the never-synced keys were searched
        assert sum(crm_sim.state.records_per_call("update")) == 20
        assert crm_sim.state.calls_per_api["search"] == 10

        # a marked key inserted again is live again: its upsert clears the mark
        await env.produce(_inserts(env, range(1, 6), lsn0=9000))
        await Sink(env.settings, until_idle=True).run()
        marked = {pid for pid, rec in crm_view(crm_sim).items() if rec.get("Deleted") is True}
        assert marked == {str(k) for k in range(6, 21)}


async def test_on_delete_ignore_leaves_the_crm_record_as_it_was(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with sink_env(
        unique_name, pg_dsn, kafka_bootstrap, crm_sim, table_extra={"on_delete": "ignore"}
    ) as env:
        await env.produce(_inserts(env, range(1, 31)))
        await Sink(env.settings, until_idle=True).run()
        before = {pid: dict(rec) for pid, rec in crm_view(crm_sim).items()}
        calls = dict(crm_sim.state.calls_per_api)

        await env.produce(_deletes(env, range(1, 11), lsn0=5000))
        sink = Sink(env.settings, until_idle=True)
        await sink.run()

        assert crm_view(crm_sim) == before
        assert dict(crm_sim.state.calls_per_api) == calls  # no call at all
        assert sink.stats.events == 10 and sink.stats.dead_letters == 0


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_report_batches_flushes_calls_credits_lag_latency_and_dead_letters(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    """The counters are process-wide, so the test compares each against its value before."""
    names = {
        "batches": ("streamsync_sink_batch_records_count", {}),
        "full": ("streamsync_sink_flushes_total", {"reason": "full"}),
        "upserts": ("streamsync_sink_crm_calls_total", {"api": "upsert", "outcome": "ok"}),
        "credits": ("streamsync_sink_credits_used_total", {"kind": "upsert"}),
        "latency": ("streamsync_sink_commit_to_crm_seconds_count", {}),
        "dlq": ("streamsync_sink_dlq_events_total", {"reason": "UNDECODABLE"}),
    }
    before = {k: _sample(n, **labels) for k, (n, labels) in names.items()}
    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim, partitions=1) as env:
        await env.produce(_inserts(env, range(1, 251)))
        await env.produce([(b"[0]", b"{not json")])
        await Sink(env.settings, until_idle=True).run()

        after = {k: _sample(n, **labels) for k, (n, labels) in names.items()}
        delta = {k: after[k] - before[k] for k in names}
        assert delta["batches"] >= 3  # 250 keys in windows of at most 100
        assert delta["full"] >= 2
        assert delta["upserts"] == crm_sim.state.calls_per_api["upsert"]
        upserted = crm_sim.state.records_per_call("upsert")
        assert delta["credits"] == sum(-(-n // 10) for n in upserted) > 0  # 1 per 10 records
        assert delta["latency"] == 250
        assert delta["dlq"] == 1
        # the lag gauge of the one partition reads zero once everything is consumed
        assert _sample("streamsync_sink_consumer_lag_records", partition="0") == 0.0
        text = metrics.render().decode()
        assert 'streamsync_sink_consumer_lag_records{partition="0"}' in text
