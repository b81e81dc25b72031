"""`streamsync demo`: the embedded default end to end (see streamsync/demo/run.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from streamsync.cli import app


@app.command()
def demo(
    rows: Annotated[int, typer.Option(help="orders generated for the initial load")] = 100_000,
    writer_seconds: Annotated[float, typer.Option(help="how long the live writer runs")] = 40.0,
    writer_rate: Annotated[float, typer.Option(help="live changes per second")] = 200.0,
    bulk_job_seconds: Annotated[float, typer.Option(help="simulated Bulk Write job time")] = 3.0,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 270.0,
    log_file: Annotated[Path, typer.Option(help="where the roles' logs go")] = Path(
        ".local/demo/demo.log"
    ),
) -> None:
    """Run the embedded default end to end: local stack, CRM simulator, backfill, live sync."""
    from streamsync.demo.run import DemoOptions, demo_settings, run_demo
    from streamsync.ops.logging import configure_logging

    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as stream:
        configure_logging(demo_settings(sim_url="http://127.0.0.1:1"), stream=stream)
        options = DemoOptions(
            rows=rows,
            writer_seconds=writer_seconds,
            writer_rate=writer_rate,
            bulk_job_seconds=bulk_job_seconds,
            timeout_s=timeout,
        )
        report = asyncio.run(run_demo(options))
    raise typer.Exit(0 if report.in_sync else 1)
