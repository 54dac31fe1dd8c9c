"""Writing answers: one JSON object per good input row, in input order, as JSONL or Parquet.

Answers travel as JSON lines from the predictor to the file (a Ray actor returns the same lines
the local run writes), so both runs write byte-identical outputs. Parquet gets an explicit
schema from the task's answer fields: inferring it chunk by chunk would give a chunk without
entities another type than one with them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nlu_deploy.errors import DataError


def _arrow_types():
    import pyarrow as pa

    entity = pa.struct(
        [("type", pa.string()), ("text", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
         ("score", pa.float64())]
    )  # fmt: skip
    return {"text": pa.string(), "label": pa.string(), "score": pa.float64(), "entities": pa.list_(entity)}


def answer_schema(answer_fields: tuple[str, ...], id_type=None):
    """The Parquet schema of a task's answers; `id_type`: the id column's, when ids are carried."""
    import pyarrow as pa

    types = _arrow_types()
    fields = [pa.field(name, types[name]) for name in answer_fields]
    return pa.schema(([pa.field("id", id_type)] if id_type is not None else []) + fields)


def _output_stream(path: str):
    """A new file at `path`, local or a URI (pyarrow's filesystems)."""
    if "://" not in path:
        return open(path, "wb")  # noqa: SIM115 - AnswerFile closes it
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    return filesystem.open_output_stream(inner)


def move(source: str, destination: str) -> None:
    """Rename a finished file into place: atomic on a local disk, a copy and delete elsewhere."""
    if "://" not in source:
        os.replace(source, destination)
        return
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(source)
    filesystem.move(inner, fs.FileSystem.from_uri(destination)[1])


def remove(path: str) -> None:
    if "://" not in path:
        Path(path).unlink(missing_ok=True)
        return
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    if filesystem.get_file_info(inner).type != fs.FileType.NotFound:
        filesystem.delete_file(inner)


def exists(path: str) -> bool:
    if "://" not in path:
        return Path(path).exists()
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    return filesystem.get_file_info(inner).type != fs.FileType.NotFound


# Parquet readers work best with row groups of many rows: chunks' answers are gathered as Arrow
# tables (compact: about 150 bytes an intent answer) up to this many rows, then written as one.
ROW_GROUP_ROWS = 65_536


class AnswerFile:
    """Answers appended in order to one JSONL or Parquet file."""

    def __init__(self, path: str, schema=None):
        self.path = path
        self.parquet = str(path).lower().endswith(".parquet")
        self.schema, self.rows = schema, 0
        self._stream = _output_stream(path)
        self._writer, self._pending = None, []
        if self.parquet:
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self._stream, schema)

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        self.rows += len(lines)
        if not self.parquet:
            self._stream.write("".join(line + "\n" for line in lines).encode("utf-8"))
            return
        import pyarrow as pa

        records = [json.loads(line) for line in lines]
        if "id" in self.schema.names and pa.types.is_string(self.schema.field("id").type):
            for record in records:  # ids read from text formats: written as text (12 -> "12")
                value = record.get("id")
                record["id"] = value if value is None or isinstance(value, str) else json.dumps(value)
        try:
            self._pending.append(pa.Table.from_pylist(records, schema=self.schema))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"an answer does not fit {self.path}'s columns ({exc}).") from None
        if sum(table.num_rows for table in self._pending) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            import pyarrow as pa

            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=ROW_GROUP_ROWS * 2)
            self._pending = []

    def close(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
        self._stream.close()

    def __enter__(self) -> AnswerFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
