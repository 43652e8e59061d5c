"""Small helpers the CLI shares: opening the root, printing tables, failing with one clear line."""
from __future__ import annotations

import json
import sys
from typing import NoReturn

import pyarrow as pa
import typer

ROOT_HELP = "Corpus root: a local directory or an fsspec URL such as s3://bucket/prefix (env VIDCORPUS_ROOT)."


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit with ``code`` (2: bad input/config/query)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def open_catalog(root: str, create: bool = False):
    from storage import Catalog, CorpusRoot, RootError
    try:
        return Catalog(CorpusRoot.open(root, create=create))
    except RootError as e:
        fail(str(e))


def format_table(table: pa.Table, max_rows: int = 50, max_width: int = 60) -> str:
    """A plain aligned text rendering of ``table`` (first ``max_rows`` rows)."""
    cols = table.column_names
    rows = table.slice(0, max_rows).to_pylist()
    cells = [[_cell(r[c], max_width) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    more = table.num_rows - len(rows)
    out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}"
               + (f", {more} not shown; use --format csv/json/parquet --out FILE" if more > 0 else "") + ")")
    return "\n".join(out)


def _cell(v, max_width: int) -> str:
    if v is None:
        s = "NULL"
    elif isinstance(v, float):
        s = f"{v:.4g}"
    elif isinstance(v, (list, dict)):
        s = json.dumps(v, default=str)
    else:
        s = str(v)
    s = s.replace("\n", " ")
    return s if len(s) <= max_width else s[: max_width - 1] + "…"


def write_result(table: pa.Table, fmt: str, out: str | None) -> None:
    """Write a query result as table/csv/json (stdout or file) or parquet (file)."""
    if fmt == "table":
        text = format_table(table, max_rows=table.num_rows if out else 50)
        _emit(text + "\n", out)
    elif fmt == "csv":
        import pyarrow.csv as pacsv
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        _emit(sink.getvalue().to_pybytes().decode(), out)
    elif fmt == "json":
        _emit("".join(json.dumps(r, default=str) + "\n" for r in table.to_pylist()), out)
    elif fmt == "parquet":
        if not out:
            fail("--format parquet needs --out FILE")
        import pyarrow.parquet as pq
        pq.write_table(table, out)
    else:
        fail(f"unknown --format {fmt!r}: use table, csv, json or parquet")


def _emit(text: str, out: str | None) -> None:
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
