"""Reading the columns prepare needs from a raw CSV or Parquet file, with errors people can act on.

pyarrow does the reading: CSV is streamed block by block (a whole-file read keeps about three
times the data in flight), Parquet one column at a time, and only the timestamp, target and
feature columns are read at all. Values are parsed and checked later, in `cleaning`; when a
check finds a bad row, `RawTable.where` turns its position into a file line (CSV) or row
number (Parquet) for the message.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from plateau_lstm.errors import UserError

TIME_COLUMN_NAMES = ("timestamp", "time", "date", "datetime", "ds", "date_time")
CSV_BLOCK_BYTES = 8 * 1024 * 1024
"""Bytes pyarrow parses per block: large enough to keep both cores busy, small enough that
the blocks in flight stay a few percent of a big file."""
SNIFF_BYTES = 4096
SCAN_BLOCK_BYTES = 16 * 1024 * 1024
SAMPLE_ROWS = 1000

_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx workbook?), not CSV or Parquet. "
    "Export the sheet as CSV",
    b"\x1f\x8b": "gzip-compressed, not CSV or Parquet. Decompress it first (gunzip)",
    b"\xd0\xcf\x11\xe0": "an old Excel .xls workbook, not CSV or Parquet. Export the sheet as CSV",
    b"SQLite format 3": "an SQLite database, not CSV or Parquet. Export the table as CSV",
    b"ARROW1": "an Arrow IPC (Feather) file, not CSV or Parquet. Write it as Parquet",
}
_EXPECTED = "Give a CSV with a header row or a Parquet file."
_RAGGED = re.compile(r"Expected (\d+) columns?, got (\d+)")
_CONVERSION_COLUMN = re.compile(r"In CSV column #(\d+)")


@dataclass
class RawTable:
    """The timestamp, target and feature columns of one raw file, as pyarrow read them.

    `pop` hands a column over and forgets it, so the Arrow copy is freed as soon as it has
    been converted: reading never holds the data twice over.
    """

    path: str
    display: str
    format: str  # "csv" or "parquet"
    timestamp: str
    columns: list[str]  # the target first, then the features
    rows: int
    _arrays: dict[str, pa.ChunkedArray] = field(default_factory=dict, repr=False)

    def pop(self, name: str) -> pa.ChunkedArray:
        if name in self._arrays:
            return self._arrays.pop(name)
        return _read_parquet_column(self.path, self.display, name)

    def where(self, row: int) -> str:
        """'line 9' (CSV: the file line that holds data row `row`) or 'row 8' (Parquet)."""
        return self.where_groups([[row]])[0]

    def where_groups(self, groups: list[list[int]]) -> list[str]:
        """'lines 7, 402' for each group of data rows, looked up in one pass over the file."""
        if self.format == "parquet":
            word, number = "row", {row: row + 1 for group in groups for row in group}
        else:
            word = "line"
            number = csv_record_lines(self.path, [row for group in groups for row in group])
        return [
            f"{word}{'s' if len(group) > 1 else ''} {', '.join(str(number[r]) for r in group)}"
            for group in groups
        ]


def read_raw(
    path: str,
    display: str,
    *,
    timestamp_col: str | None = None,
    target_col: str | None = None,
    feature_cols: tuple[str, ...] = (),
) -> RawTable:
    """Read a local CSV or Parquet file's timestamp, target and feature columns."""
    file_format = sniff_format(path, display)
    if file_format == "parquet":
        names, types, sample, has_rows = _parquet_schema(path, display)
    else:
        names, types, sample, has_rows = _csv_schema(path, display)
    if not has_rows and len(names) >= 2:
        raise UserError(
            f"{display}: has a header ({', '.join(names)}) but no data rows. "
            "Check that the export finished."
        )
    if len(names) < 2:
        raise UserError(
            f"{display}: found {len(names)} column ({', '.join(names)}); expected a timestamp "
            "column and at least one numeric column, comma separated. Is it CSV?"
        )
    timestamp = pick_timestamp_column(names, types, timestamp_col, display)
    target = pick_target_column(names, types, sample, target_col, timestamp, display)
    require_columns(names, feature_cols, display, option="--feature-cols")
    columns = [target] + [c for c in feature_cols if c != target]
    wanted = [timestamp] + columns
    for name in wanted:
        if names.count(name) > 1:
            raise UserError(
                f"{display}: column {name!r} appears {names.count(name)} times in the header. "
                "Rename the copies so that every column name is unique."
            )
    if "timestamp" in columns:
        raise UserError(
            f"{display}: a value column may not be called 'timestamp' (the prepared set uses "
            "that name for the time). Rename it in the file."
        )
    if file_format == "parquet":
        rows = pq.ParquetFile(path).metadata.num_rows
        arrays = {}
    else:
        arrays = _read_csv_columns(path, display, names, wanted, columns)
        rows = len(arrays[timestamp])
    return RawTable(path, display, file_format, timestamp, columns, rows, arrays)


def sniff_format(path: str, display: str) -> str:
    """'csv' or 'parquet' from the first bytes; refuses what is neither, saying what it is."""
    if not os.path.exists(path):
        raise UserError(f"{display}: no such file. Check the --input path or URI.")
    if os.path.isdir(path):
        raise UserError(
            f"{display}: is a directory, not a CSV or Parquet file. Give the file inside it."
        )
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as err:
        raise UserError(
            f"{display}: cannot be read ({err.strerror}). Check its permissions: the user "
            f"running prepare (uid {os.geteuid()}) must be able to read it."
        ) from err
    if not head:
        raise UserError(f"{display}: the file is empty (0 bytes). {_EXPECTED}")
    if head.startswith(b"PAR1"):
        return "parquet"
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise UserError(f"{display}: is {what}.")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise UserError(
            f"{display}: not a text file (binary content at byte {nul}), so neither CSV nor "
            f"Parquet. {_EXPECTED}"
        )
    text = head.lstrip(codecs.BOM_UTF8).lstrip()
    if not text:
        raise UserError(f"{display}: the file holds only blank space. {_EXPECTED}")
    if text[:1] in (b"{", b"["):
        raise UserError(
            f"{display}: looks like JSON, not CSV or Parquet. Convert it to CSV with a header "
            "row, or to Parquet."
        )
    if text[:1] == b"<":
        raise UserError(
            f"{display}: looks like HTML or XML, not CSV or Parquet (an error page saved "
            f"instead of the data?). {_EXPECTED}"
        )
    return "csv"


# ------------------------------------------------------------------------------------------
# Choosing columns


def pick_timestamp_column(names, types, wanted: str | None, display: str) -> str:
    if wanted is not None:
        require_columns(names, [wanted], display, option="--timestamp-col")
        return wanted
    for name, kind in zip(names, types, strict=True):
        if name.strip().lower() in TIME_COLUMN_NAMES or _is_time_type(kind):
            return name
    raise UserError(
        f"{display}: no timestamp column found among: {', '.join(names)}. "
        "Name it with --timestamp-col."
    )


def pick_target_column(names, types, sample, wanted: str | None, timestamp, display) -> str:
    if wanted is not None:
        require_columns(names, [wanted], display, option="--target-col")
        return wanted
    others = [(n, t) for n, t in zip(names, types, strict=True) if n != timestamp]
    for name, kind in others:
        if _is_number_type(kind):
            return name
    # A numeric column with one bad cell reads as text; pick it anyway so that the cell is
    # reported by line and value instead of the column being passed over.
    for name, kind in others:
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            values = sample(name)
            if len(values) and _mostly_numbers(values):
                return name
    # An entirely blank column has no type at all; choosing it gets the clearer message
    # ("has no values at all") than claiming the file has no numeric column.
    for name, kind in others:
        if pa.types.is_null(kind):
            return name
    raise UserError(
        f"{display}: no numeric column to forecast among: {', '.join(names)}. "
        "Name it with --target-col."
    )


def require_columns(names, wanted, display: str, option: str) -> None:
    for column in wanted:
        if column not in names:
            raise UserError(
                f"{display}: column {column!r} ({option}) not found; "
                f"the columns are: {', '.join(names)}."
            )


def _is_time_type(kind: pa.DataType) -> bool:
    return pa.types.is_timestamp(kind) or pa.types.is_date(kind)


def _is_number_type(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _mostly_numbers(values: list) -> bool:
    import pandas as pd

    parsed = pd.to_numeric(pd.Series(values, dtype="str"), errors="coerce")
    return bool(parsed.notna().mean() >= 0.9)


# ------------------------------------------------------------------------------------------
# Parquet


def _parquet_schema(path: str, display: str):
    try:
        parquet = pq.ParquetFile(path)
        schema, rows = parquet.schema_arrow, parquet.metadata.num_rows
    except Exception as err:  # pyarrow raises several types for a damaged footer
        raise _damaged_parquet(display, err) from err

    def sample(name: str) -> list:
        batches = pq.ParquetFile(path).iter_batches(batch_size=SAMPLE_ROWS, columns=[name])
        first = next(batches, None)
        return [] if first is None else [v for v in first.column(0).to_pylist() if v is not None]

    return list(schema.names), list(schema.types), sample, rows > 0


def _read_parquet_column(path: str, display: str, name: str) -> pa.ChunkedArray:
    try:
        # Memory-mapped and on one thread: measured, this decodes with the least CPU, and
        # extra threads only paid off on an idle machine, which a nightly node rarely is.
        return pq.ParquetFile(path, memory_map=True).read(columns=[name], use_threads=False)[0]
    except Exception as err:  # a damaged page only shows when it is decoded
        raise _damaged_parquet(display, err) from err


def _damaged_parquet(display: str, err: Exception) -> UserError:
    return UserError(
        f"{display}: starts like Parquet but cannot be read as Parquet ({err}). The file is "
        "truncated or damaged; write it again."
    )


# ------------------------------------------------------------------------------------------
# CSV


def _csv_schema(path: str, display: str):
    """Column names, the types pyarrow infers from the first block, and that block's values."""
    try:
        reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 20))
        first = reader.read_next_batch() if reader.schema.names else None
    except StopIteration:
        first = None
    except pa.ArrowInvalid as err:
        raise _csv_error(path, display, err) from err
    names = list(reader.schema.names)
    if names and any(pa.types.is_binary(t) for t in reader.schema.types):
        raise _not_utf8(path, display)

    def sample(name: str) -> list:
        if first is None:
            return []
        values = first.column(names.index(name)).to_pylist()[:SAMPLE_ROWS]
        return [v for v in values if v is not None]

    return names, list(reader.schema.types), sample, first is not None and first.num_rows > 0


def _read_csv_columns(
    path: str, display: str, names: list[str], wanted: list[str], numeric: list[str]
) -> dict[str, pa.ChunkedArray]:
    """Stream the `wanted` columns; numbers straight to float64, timestamps as pyarrow infers.

    pyarrow refuses a whole column for one bad cell, naming the column but not the row. That
    column is then read again as text, which cleaning parses with pandas to find the row; the
    other columns keep their types, so a bad cell costs one more pass, not a file of strings.
    """
    types = {name: pa.float64() for name in numeric}
    for _ in range(len(wanted) + 1):
        try:
            return _stream_csv(path, wanted, types)
        except pa.ArrowInvalid as err:
            if "conversion error" not in str(err):
                raise _csv_error(path, display, err) from err
            hint = _CONVERSION_COLUMN.search(str(err))
            name = names[int(hint.group(1))] if hint and int(hint.group(1)) < len(names) else None
            if name in wanted and types.get(name) != pa.string():
                types[name] = pa.string()
            else:  # no usable hint: every column as text
                types = dict.fromkeys(wanted, pa.string())
        # hand the failed pass's blocks back to the system before the next pass fills up
        pa.default_memory_pool().release_unused()
    raise UserError(f"{display}: pyarrow could not read the columns {', '.join(wanted)}.")


def _stream_csv(path: str, wanted: list[str], types: dict) -> dict[str, pa.ChunkedArray]:
    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(
            include_columns=wanted, column_types=types, strings_can_be_null=True
        ),
    )
    batches = list(reader)
    schema = reader.schema
    columns = {
        name: pa.chunked_array([batch.column(i) for batch in batches], type=schema.field(i).type)
        for i, name in enumerate(schema.names)
    }
    # Only the per-column arrays keep the buffers now, so `RawTable.pop` can free them one by one.
    del batches
    return columns


def _csv_error(path: str, display: str, err: Exception) -> UserError:
    text = str(err)
    ragged = _RAGGED.search(text)
    if ragged:
        expected, got = int(ragged.group(1)), int(ragged.group(2))
        line, content = _first_ragged_line(path, expected)
        return UserError(
            f"{display}: line {line} has {got} fields but the header has {expected} "
            f"({content!r}). Fix that line; quote values that contain commas."
        )
    if "UTF8" in text or "UTF-8" in text:
        return _not_utf8(path, display)
    if "Empty CSV file" in text:
        return UserError(f"{display}: the file holds no header row. {_EXPECTED}")
    return UserError(f"{display}: not a valid CSV file ({text}). {_EXPECTED}")


def _not_utf8(path: str, display: str) -> UserError:
    line, byte = _first_non_utf8(path)
    return UserError(
        f"{display}: line {line} is not UTF-8 text (byte 0x{byte:02x}). Save the file as "
        "UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
    )


def _first_non_utf8(path: str) -> tuple[int, int]:
    """(line, byte value) of the first byte that is not UTF-8; only called once pyarrow said so."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                # the decoder may still hold the tail of the previous chunk; err.start counts
                # from there, and only newline-free bytes can be pending, so lines are exact
                pending = len(err.object) - len(chunk)
                position = max(err.start - pending, 0)
                return newlines + chunk.count(b"\n", 0, position) + 1, err.object[err.start]
            newlines += chunk.count(b"\n")
    return newlines + 1, 0


def _csv_records(path: str):
    """(first file line, fields) of every non-blank record, the header included.

    Python's csv module follows the same quoting rules as pyarrow; it runs only after a
    vectorized check found a problem, to turn a row position into a file line.
    """
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        next_line = 1
        for fields in reader:
            line, next_line = next_line, reader.line_num + 1
            if fields:  # pyarrow skips blank lines too
                yield line, fields


def csv_record_lines(path: str, rows: list[int]) -> dict[int, int]:
    """File line on which each data row (0 = the first after the header) starts."""
    counted = _record_lines_by_counting(path, rows)
    return counted if counted is not None else _record_lines_by_parsing(path, rows)


def _record_lines_by_counting(path: str, rows: list[int]) -> dict[int, int] | None:
    """Data row r is on line r + 2 when nothing before it spans or skips lines: no quotes
    below the header, no blank lines, no lone carriage returns. Counting newlines in C checks
    that at disk speed; None when the file may have any of them (then the csv module walks
    the records instead)."""
    last_line = max(rows) + 2
    lines_done, previous = 0, b"\n"  # a newline "before" the file catches a blank first line
    with open(path, "rb") as handle:
        while lines_done < last_line and (chunk := handle.read(SCAN_BLOCK_BYTES)):
            body = chunk if lines_done else chunk[chunk.find(b"\n") + 1 :]  # quoted header ok
            joined = previous + chunk
            if (
                b'"' in body
                or b"\n\n" in joined
                or b"\n\r\n" in joined
                or chunk.count(b"\r") != chunk.count(b"\r\n")
            ):
                return None
            lines_done += chunk.count(b"\n")
            previous = chunk[-1:]
    return {row: row + 2 for row in rows}


def _record_lines_by_parsing(path: str, rows: list[int]) -> dict[int, int]:
    wanted, found = set(rows), {}
    for record, (line, _fields) in enumerate(_csv_records(path), start=-1):
        if record in wanted:
            found[record] = line
            if len(found) == len(wanted):
                break
    return found


def _first_ragged_line(path: str, expected: int) -> tuple[int, str]:
    for line, fields in _csv_records(path):
        if len(fields) != expected:
            return line, ",".join(fields)[:200]
    return 0, ""
