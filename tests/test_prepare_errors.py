"""Bad input: one line on stderr (what, where, what to do), exit 2, and nothing at --output."""

import ctypes
import gzip
import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from plateau_lstm.cli import main


def _hourly(rows=400, **extra) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=rows, freq="h")
    t = np.arange(rows)
    frame = pd.DataFrame(
        {
            "date": index.strftime("%Y-%m-%d %H:%M:%S"),
            "temp": 10 + 5 * np.sin(2 * np.pi * t / 24) + 0.01 * t,
        }
    )
    for name, values in extra.items():
        frame[name] = values
    return frame


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _with_cell(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _replace_line(data: bytes, line: int, content: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[line - 1] = content
    return b"\n".join(lines)


def _assert_refused(code: int, err: str, out, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("plateau-lstm prepare: error: ")]
    assert errors == lines[-1:], err  # exactly one error line, and nothing after it
    for fragment in fragments:
        assert fragment in errors[0]
    assert not out.parent.exists()  # nothing at --output, not even the folder above it


HOURLY = _hourly()
WITH_LOAD = _hourly(load=np.cos(np.arange(400)))
MULTILINE = b'date,temp,note\n2024-01-01 00:00:00,1.0,"two\nlines"\n\n2024-01-01 01:00:00,x1,ok\n'

CASES = {
    "missing file": (None, [], "nope.csv: no such file. Check the --input path or URI."),
    "directory": ("dir", [], ": is a directory, not a CSV or Parquet file."),
    "empty": (
        b"",
        [],
        ": the file is empty (0 bytes). Give a CSV with a header row or a Parquet file.",
    ),
    "blank": (b"\n  \n", [], ": the file holds only blank space."),
    "header only": (
        b"date,temp\n",
        [],
        ": has a header (date, temp) but no data rows. Check that the export finished.",
    ),
    "parquet header only": (
        _parquet(HOURLY.head(0)),
        [],
        ": has a header (date, temp) but no data rows.",
    ),
    "binary": (
        b"date,temp\n\x89\x00\x13\x07",
        [],
        ": not a text file (binary content at byte 11), so neither CSV nor Parquet. "
        "Give a CSV with a header row or a Parquet file.",
    ),
    "json": (
        b'[{"date": "2024-01-01", "temp": 1.5}]',
        [],
        ": looks like JSON, not CSV or Parquet. Convert it to CSV with a header row, or to "
        "Parquet.",
    ),
    "html": (
        b"<!DOCTYPE html><html><body>503</body></html>",
        [],
        ": looks like HTML or XML, not CSV or Parquet (an error page saved instead of the data?)",
    ),
    "excel": (
        b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 40,
        [],
        ": is a ZIP archive (an Excel .xlsx workbook?), not CSV or Parquet. Export the sheet "
        "as CSV.",
    ),
    "gzip": (
        gzip.compress(_csv(HOURLY)),
        [],
        ": is gzip-compressed, not CSV or Parquet. Decompress it first (gunzip).",
    ),
    "semicolons": (
        b"date;temp\n2024-01-01;1.5\n2024-01-02;1.7\n",
        [],
        ": found 1 column (date;temp); expected a timestamp column and at least one numeric "
        "column, comma separated. Is it CSV?",
    ),
    "truncated parquet": (
        _parquet(HOURLY)[:-40],
        [],
        (": starts like Parquet but cannot be read as Parquet (", "truncated or damaged"),
    ),
    "damaged parquet": (
        b"PAR1" + b"\x17" * 200 + b"PAR1",
        [],
        (
            ": starts like Parquet but cannot be read as Parquet (",
            "). The file is truncated or damaged; write it again.",
        ),
    ),
    "ragged line": (
        _replace_line(_csv(HOURLY), 6, b"2024-01-01 04:00:00,14.2,9"),
        [],
        ": line 6 has 3 fields but the header has 2 ('2024-01-01 04:00:00,14.2,9'). "
        "Fix that line; quote values that contain commas.",
    ),
    "not utf-8": (
        _replace_line(_csv(HOURLY), 9, "2024-01-01 07:00:00,12.5°".encode("latin-1")),
        [],
        ": line 9 is not UTF-8 text (byte 0xb0). Save the file as UTF-8",
    ),
    "duplicate header": (
        b"date,temp,temp\n2024-01-01,1,2\n",
        [],
        ": column 'temp' appears 2 times in the header. Rename the copies so that every "
        "column name is unique.",
    ),
    "missing timestamp column": (
        _csv(WITH_LOAD),
        ["--timestamp-col", "when"],
        ": column 'when' (--timestamp-col) not found; the columns are: date, temp, load.",
    ),
    "missing target column": (
        _csv(WITH_LOAD),
        ["--target-col", "tmp"],
        ": column 'tmp' (--target-col) not found; the columns are: date, temp, load.",
    ),
    "missing feature column": (
        _csv(WITH_LOAD),
        ["--feature-cols", "load,rain"],
        ": column 'rain' (--feature-cols) not found; the columns are: date, temp, load.",
    ),
    "no timestamp column": (
        b"a,b\n1,2\n3,4\n",
        [],
        ": no timestamp column found among: a, b. Name it with --timestamp-col.",
    ),
    "no numeric column": (
        b"date,city\n2024-01-01,Oslo\n2024-01-02,Bergen\n",
        [],
        ": no numeric column to forecast among: date, city. Name it with --target-col.",
    ),
    "non-numeric target": (
        _csv(_with_cell(HOURLY, 7, "temp", "12,5°")),
        [],
        ": non-numeric value '12,5°' in column 'temp' at line 9. Fix or blank that cell "
        "(blanks are interpolated).",
    ),
    "non-numeric feature far down": (
        _csv(_with_cell(_hourly(rows=5000, load=np.arange(5000.0)), 4321, "load", "—")),
        ["--feature-cols", "load"],
        ": non-numeric value '—' in column 'load' at line 4323.",
    ),
    "non-numeric after a multi-line field and a blank line": (
        MULTILINE,
        ["--target-col", "temp"],
        ": non-numeric value 'x1' in column 'temp' at line 5.",
    ),
    "non-numeric below a quoted header": (
        b'"date","temp"\n' + _csv(_with_cell(HOURLY, 200, "temp", "?")).split(b"\n", 1)[1],
        [],
        ": non-numeric value '?' in column 'temp' at line 202.",
    ),
    "non-numeric in parquet": (
        _parquet(_with_cell(HOURLY, 7, "temp", "abc").astype({"temp": str})),
        [],
        ": non-numeric value 'abc' in column 'temp' at row 8.",
    ),
    "unparseable timestamp": (
        _csv(_with_cell(HOURLY, 3, "date", "yesterday")),
        [],
        ": cannot read timestamp 'yesterday' in column 'date' at line 5. Use ISO 8601, e.g. "
        "2024-01-31 13:00:00 or 2024-01-31T13:00:00+02:00.",
    ),
    "unparseable timestamp far down": (
        _csv(_with_cell(_hourly(rows=5000), 4000, "date", "2024-13-45 25:00:00")),
        [],
        ": cannot read timestamp '2024-13-45 25:00:00' in column 'date' at line 4002.",
    ),
    "empty timestamp": (
        _csv(_with_cell(HOURLY, 3, "date", None)),
        [],
        ": empty timestamp in column 'date' at line 5. Every row needs a time.",
    ),
    "numbers as timestamps": (
        b"time,temp\n1700000000,1.5\n1700003600,1.7\n",
        [],
        ": column 'time' holds numbers (first 1700000000 at line 2), not timestamps.",
    ),
    "infinite value": (
        _csv(HOURLY.assign(temp=np.where(HOURLY.index == 10, np.inf, HOURLY["temp"]))),
        [],
        ": infinite value in column 'temp' at line 12 (1 in all). Replace them with real "
        "numbers or blanks.",
    ),
    "overflowing feature": (
        _csv(_with_cell(WITH_LOAD, 30, "load", "-1e999")),
        ["--feature-cols", "load"],
        ": infinite value in column 'load' at line 32 (1 in all).",
    ),
    "target entirely missing": (
        _csv(HOURLY.assign(temp=np.nan)),
        [],
        ": the target column 'temp' has no values at all. Choose another column with --target-col.",
    ),
    "too few rows": (
        _csv(HOURLY.head(20)),
        ["--window", "24"],
        ": 20 usable rows are too few for window 24 + horizon 1 and a 70%/15%/rest split; "
        "need at least 36. Give more data or a smaller --window.",
    ),
    "too few rows for a long horizon": (
        _csv(HOURLY.head(100)),
        ["--window", "48", "--horizon", "24"],
        ": 100 usable rows are too few for window 48 + horizon 24 and a 70%/15%/rest split; "
        "need at least 103.",
    ),
    "duplicate timestamps": (
        _csv(pd.concat([HOURLY, HOURLY.iloc[[5, 6]]])),
        [],
        ": 2 timestamps occur more than once (2 extra rows); first: 2024-01-01 05:00:00+00:00 "
        "at lines 7, 402; 2024-01-01 06:00:00+00:00 at lines 8, 403. Remove them, or pass "
        "--on-duplicate last (keep the last row of each) or --on-duplicate mean (average them).",
    ),
    "many duplicate timestamps": (
        _csv(pd.concat([HOURLY, HOURLY.iloc[50:60], HOURLY.iloc[[55]]])),
        [],
        ": 10 timestamps occur more than once (11 extra rows); first: 2024-01-03 02:00:00+00:00 "
        "at lines 52, 402; 2024-01-03 03:00:00+00:00 at lines 53, 403; "
        "2024-01-03 04:00:00+00:00 at lines 54, 404. Remove them",
    ),
    "long run of blank cells": (
        _csv(HOURLY.assign(temp=np.where(HOURLY.index.isin(range(101, 140)), np.nan, 1.0))),
        [],
        ": column 'temp' is missing 39 consecutive steps from 2024-01-05 05:00:00+00:00 to "
        "2024-01-06 19:00:00+00:00, more than --max-gap 24. Fill the data, or pass "
        "--max-gap 39 to interpolate across it.",
    ),
    "long run of absent rows": (
        _csv(HOURLY.drop(index=range(200, 230))),
        ["--max-gap", "12"],
        ": has no rows for 30 consecutive steps of h from 2024-01-09 08:00:00+00:00 to "
        "2024-01-10 13:00:00+00:00, more than --max-gap 12. Fill the data, or pass "
        "--max-gap 30 to interpolate across it.",
    ),
    "constant feature": (
        _csv(_hourly(load=1.0)),
        ["--feature-cols", "load"],
        ": column 'load' is constant on the training part (value 1.0); it cannot be scaled. "
        "Choose another --feature-cols.",
    ),
    "columns never complete together": (
        _csv(
            HOURLY.assign(
                temp=np.where(HOURLY.index < 200, HOURLY["temp"], np.nan),
                load=np.where(HOURLY.index >= 200, 1.0, np.nan),
            )
        ),
        ["--feature-cols", "load"],
        ": no time step has a value in every one of the columns temp, load. Check --feature-cols.",
    ),
    "unknown frequency": (
        _csv(HOURLY),
        ["--freq", "fortnight"],
        "--freq 'fortnight' is not a pandas frequency (",
    ),
    "window of zero": (_csv(HOURLY), ["--window", "0"], "--window must be at least 1."),
}


@pytest.mark.parametrize("content,args,fragment", CASES.values(), ids=CASES.keys())
def test_bad_input_gets_one_clear_line_and_writes_nothing(
    tmp_path, capsys, content, args, fragment
):
    if content is None:
        path = tmp_path / "nope.csv"
    elif content == "dir":
        path = tmp_path / "exports"
        path.mkdir()
    else:
        path = tmp_path / "input.csv"
        path.write_bytes(content)
    out = tmp_path / "runs" / "prepared"
    code = main(["prepare", "--input", str(path), "--output", str(out), *args])
    first, *rest = fragment if isinstance(fragment, tuple) else (fragment,)
    # a message about the file starts with its name; one about an option, with the option
    if not first.startswith("--"):
        first = f"{path}{first.removeprefix('nope.csv')}"
    _assert_refused(code, capsys.readouterr().err, out, first, *rest)


def _drop_file_access_override() -> None:
    """In the child, before exec: lose root's power to read any file, as a normal user has.

    Removing CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set means the program
    started next runs as uid 0 but is refused by a file's permission bits like anyone else.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for capability in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file_names_the_permission_problem(tmp_path):
    path = tmp_path / "locked.csv"
    path.write_bytes(_csv(HOURLY))
    path.chmod(0)
    out = tmp_path / "runs" / "prepared"
    preexec = None
    if os.geteuid() == 0:
        # root reads any file whatever its mode; run the command as a root without that power
        try:
            subprocess.run(
                [sys.executable, "-c", "0"], preexec_fn=_drop_file_access_override, check=True
            )
        except (OSError, subprocess.SubprocessError):
            pytest.skip("running as root without CAP_SETPCAP: cannot make a file unreadable")
        preexec = _drop_file_access_override
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "plateau_lstm.cli",
            "prepare",
            "--input",
            str(path),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        timeout=120,
    )
    _assert_refused(
        result.returncode,
        result.stderr,
        out,
        f"{path}: cannot be read (Permission denied). Check its permissions: the user running "
        f"prepare (uid {os.geteuid()}) must be able to read it.",
    )
