"""vidcorpus storage: the corpus root, the Parquet/DuckDB catalog, clip store and shards.

Imports nothing else from the repository.
"""
from storage.catalog import BadPart, Catalog
from storage.root import CorpusRoot, RootError
from storage.schemas import TABLES, TableSpec, table_spec
from storage.sql import ReadOnlyError, SQLError

__all__ = ["BadPart", "Catalog", "CorpusRoot", "RootError", "TABLES", "TableSpec", "table_spec",
           "ReadOnlyError", "SQLError"]
