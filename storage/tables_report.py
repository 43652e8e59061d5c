"""A human-readable report of the catalog's tables: schemas, row counts, parts, corrupt parts."""
from __future__ import annotations

from storage.catalog import Catalog
from storage.schemas import TABLES


def tables_report(catalog: Catalog) -> str:
    good, bad = catalog.healthy_parts()
    lines = []
    with catalog.connect() as con:
        for name, spec in TABLES.items():
            n = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            key = ", ".join(spec.key)
            lines.append(f"{name}  ({n} rows, {len(good[name])} parts, key: {key})")
            lines += [f"    {f.name}: {f.type}" for f in spec.schema]
        for view in ("clips_v", "corpus_v"):
            cols = [r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()]
            n = con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]
            lines.append(f"{view}  (view, {n} rows): {', '.join(cols)}")
    if bad:
        lines.append(f"CORRUPT PARTS ({len(bad)}; skipped by every query):")
        lines += [f"    {b.table}: {b.path}: {b.reason}" for b in bad]
    return "\n".join(lines)
