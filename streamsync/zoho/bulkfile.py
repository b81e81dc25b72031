"""Bulk Write files: rows → CSV inside a zip on disk (bounded memory); result zip → outcomes.

``write_bulk_zip()`` streams rows through aiocsv into a CSV file, then deflates it into a zip
holding exactly that one CSV; memory stays bounded by one row plus the zip buffers.
``parse_bulk_result()`` reads Zoho's result CSV (STATUS, RECORD_ID, ERRORS; STATUS values in
any case) into one ``BulkRowResult`` per data row.
"""

from __future__ import annotations

import asyncio
import csv
import io
import zipfile
from collections.abc import AsyncIterable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiofiles
from aiocsv import AsyncWriter

__all__ = ["BulkRowResult", "parse_bulk_result", "parse_errors", "write_bulk_zip", "zip_rows"]


@dataclass(frozen=True, slots=True)
class BulkRowResult:
    row: int  # 0-based data row of the uploaded CSV
    status: str  # ADDED, UPDATED, SKIPPED (or UNPROCESSED)
    record_id: str | None
    errors: dict[str, str] = field(default_factory=dict)  # column → error code
    values: dict[str, str] = field(default_factory=dict)  # the echoed input columns

    @property
    def ok(self) -> bool:
        return self.status in ("ADDED", "UPDATED")


async def write_bulk_zip(
    rows: AsyncIterable[Sequence[str]] | Iterable[Sequence[str]],
    columns: Sequence[str],
    path: Path | str,
    *,
    csv_name: str | None = None,
) -> int:
    """Write ``columns`` as the header and every row into ``path`` (a zip of one CSV).

    Returns the number of data rows. Cancellation leaves a partial file that the caller removes.
    """
    path = Path(path)
    csv_path = path.with_suffix(".csv.part")
    count = 0
    async with aiofiles.open(csv_path, "w", encoding="utf-8", newline="") as handle:
        writer = AsyncWriter(handle, lineterminator="\n")
        await writer.writerow(list(columns))
        if isinstance(rows, AsyncIterable):
            async for row in rows:
                await writer.writerow(list(row))
                count += 1
        else:
            for row in rows:
                await writer.writerow(list(row))
                count += 1
    name = csv_name or (path.stem + ".csv")

    def _zip() -> None:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(csv_path, arcname=name)
        csv_path.unlink()

    await asyncio.to_thread(_zip)
    return count


def zip_rows(rows: Iterable[Sequence[str]], columns: Sequence[str], path: Path) -> None:
    """Rows already in memory (the sink's coalesced batch) as one zipped CSV, in one go.

    Blocking: run it in a worker thread (one hop for the whole file, where
    ``write_bulk_zip`` streams a table read row by row).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.stem + ".csv", buf.getvalue())


def parse_errors(cell: str) -> dict[str, str]:
    """``MANDATORY_NOT_FOUND-Company,Last_Name:DUPLICATE_DATA-Email`` → {column: code}."""
    result: dict[str, str] = {}
    cell = (cell or "").strip()
    if not cell:
        return result
    for part in cell.split(":"):
        part = part.strip()
        if not part:
            continue
        code, _, cols = part.partition("-")
        if not cols:
            result.setdefault("", code)
            continue
        for col in cols.split(","):
            if col.strip():
                result[col.strip()] = code.strip()
    return result


def parse_bulk_result(source: Path | str | bytes) -> list[BulkRowResult]:
    """Zoho's result zip (a path or its bytes) → one BulkRowResult per data row, in row order."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = [n for n in archive.namelist() if n.lower().endswith(".csv")]
        if not names:
            raise ValueError("bulk result zip holds no CSV")
        with archive.open(names[0]) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            return parse_bulk_result_csv(text)


def parse_bulk_result_csv(handle: Iterable[str]) -> list[BulkRowResult]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        return []
    upper = [h.strip().upper() for h in header]
    try:
        i_status = upper.index("STATUS")
    except ValueError:
        raise ValueError("bulk result CSV has no STATUS column") from None
    i_id = upper.index("RECORD_ID") if "RECORD_ID" in upper else None
    i_err = upper.index("ERRORS") if "ERRORS" in upper else None
    special = {i_status, i_id, i_err}
    out: list[BulkRowResult] = []
    for n, cells in enumerate(reader):
        if not cells:
            continue

        def cell(i: int | None, cells: list[str] = cells) -> str:
            return cells[i].strip() if i is not None and i < len(cells) else ""

        status = cell(i_status).upper().replace(" ", "_")
        values = {
            header[i]: cells[i] for i in range(min(len(header), len(cells))) if i not in special
        }
        out.append(
            BulkRowResult(
                row=n,
                status=status,
                record_id=cell(i_id) or None,
                errors=parse_errors(cell(i_err)),
                values=values,
            )
        )
    return out
