"""`streamsync crm-sim`: serve the bundled Zoho CRM simulator."""

from __future__ import annotations

from typing import Annotated

import typer

from streamsync.cli import app


@app.command("crm-sim")
def crm_sim(
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    bulk_job_seconds: Annotated[float, typer.Option(help="Seconds per bulk job stage.")] = 1.0,
    latency_ms: Annotated[float, typer.Option(help="Fixed latency per call.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Random extra latency per call.")] = 0.0,
    rate_429: Annotated[float, typer.Option(help="Share of calls answered 429.")] = 0.0,
    rate_500: Annotated[float, typer.Option(help="Share of calls answered 500.")] = 0.0,
    rate_drop: Annotated[float, typer.Option(help="Share of connections dropped.")] = 0.0,
    rate_slow: Annotated[float, typer.Option(help="Share of slow responses.")] = 0.0,
    slow_ms: Annotated[float, typer.Option(help="Extra latency of a slow response.")] = 2000.0,
    concurrency: Annotated[int, typer.Option(help="Concurrent calls before 429.")] = 25,
    daily_credit_budget: Annotated[int, typer.Option(help="Credits per 24 h.")] = 10_000_000,
    token_ttl_s: Annotated[float, typer.Option(help="Access token lifetime.")] = 3600.0,
    fail_next_bulk_jobs: Annotated[int, typer.Option(help="Make the next N jobs FAIL.")] = 0,
    public_url: Annotated[
        str | None, typer.Option(help="api_domain to announce (default: request origin).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fault injection.")] = 0,
) -> None:
    """Serve the Zoho CRM v8 simulator (token, records, metadata, Bulk Write, /__sim/*)."""
    from aiohttp import web

    from streamsync.ops.runtime import tune_gc
    from streamsync.zoho.simulator import SimConfig, create_app

    config = SimConfig(
        host=host,
        port=port,
        seed=seed,
        bulk_job_seconds=bulk_job_seconds,
        latency_ms=latency_ms,
        latency_jitter_ms=jitter_ms,
        rate_429=rate_429,
        rate_500=rate_500,
        rate_drop=rate_drop,
        rate_slow=rate_slow,
        slow_ms=slow_ms,
        concurrency=concurrency,
        daily_credit_budget=daily_credit_budget,
        token_ttl_s=token_ttl_s,
        fail_next_bulk_jobs=fail_next_bulk_jobs,
        public_url=public_url,
    )
    typer.echo(f"crm-sim listening on http://{host}:{port}", err=True)
    tune_gc()  # it holds every record it was sent: keep the collector off that heap
    web.run_app(create_app(config), host=host, port=port, print=None, access_log=None)
