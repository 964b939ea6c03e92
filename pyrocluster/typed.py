"""Richer values on the wire without pickle: dates, times, decimals, UUIDs, numpy and pandas.

Each type travels as a msgpack extension whose layout is a plain msgpack list or raw bytes
(docs/protocol.md, "Typed values"). Decoding runs no code of the sender's choosing: every field
is checked, a numpy dtype may not hold Python objects, and a frame is read by Arrow's IPC reader.
numpy and pandas are imported only when a value of theirs is met, so a process that never sends
one never loads them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import sys
import uuid
from collections.abc import Callable
from typing import Any

import msgpack

from pyrocluster import valueref

DATETIME, DATE, TIME, TIMEDELTA, DECIMAL, UUID = 0x40, 0x41, 0x42, 0x43, 0x44, 0x45
NDARRAY, NPSCALAR, DATAFRAME, SERIES = 0x50, 0x51, 0x60, 0x61

MAX_DECIMAL_CHARS = 1000
"""Longest decimal text accepted (a Decimal's exponent is unbounded; its text need not be)."""
_DECIMAL = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|-?(Infinity|s?NaN\d*)")


class BadValue(ValueError):
    """Extension bytes that are not a value this module writes (the codec makes it a DecodeError)."""


# ---- encoding ----------------------------------------------------------------------------------


def _inner(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _zone(tz: dt.tzinfo | None, when: dt.datetime | None) -> Any:
    """None (naive), ``["zone", key]`` for a ZoneInfo, else ``["offset", seconds]``."""
    if tz is None:
        return None
    key = getattr(tz, "key", None)
    if isinstance(key, str) and type(tz).__module__ == "zoneinfo":
        return ["zone", key]
    offset = tz.utcoffset(when)
    if offset is None:
        return None
    return ["offset", offset.total_seconds()]


def _encode_datetime(v: dt.datetime) -> bytes:
    zone = _zone(v.tzinfo, v)
    fields = [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold, zone]
    return _inner(fields)


def _encode_time(v: dt.time) -> bytes:
    return _inner([v.hour, v.minute, v.second, v.microsecond, v.fold, _zone(v.tzinfo, None)])


def array_pieces(v: Any) -> list[Any]:
    """The extension body of an array as buffers: its header, then its data (the array's own
    buffer when the buffer protocol can describe it, else a copy)."""
    if v.dtype.hasobject:
        raise TypeError(f"ndarray of dtype {v.dtype}")
    fortran = v.flags.f_contiguous and not v.flags.c_contiguous
    header = _inner([v.dtype.str if v.dtype.fields is None else v.dtype.descr, list(v.shape), fortran])
    ordered = v.T if fortran else v  # a Fortran array's transpose is C-contiguous, same bytes
    data: Any = None
    if ordered.flags.c_contiguous:
        try:
            data = memoryview(ordered).cast("B")
        except (TypeError, ValueError):  # dtypes the buffer protocol cannot describe (datetime64)
            data = None
    if data is None:
        data = v.tobytes(order="F" if fortran else "C")
    return [len(header).to_bytes(4, "little") + header, data]


def is_array(value: Any) -> bool:
    """True for a numpy array (numpy already imported: a value of its type exists)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def _numpy_array(v: Any) -> bytes:
    return b"".join(array_pieces(v))


def _numpy_scalar(v: Any) -> bytes:
    if v.dtype.hasobject:
        raise TypeError(f"numpy scalar of dtype {v.dtype}")
    return _inner([v.dtype.str, v.tobytes()])


def _arrow_table(frame: Any) -> Any:
    try:
        import pyarrow as pa
    except ImportError:
        raise TypeError(
            f"{type(frame).__name__} needs the data extra: pip install 'pyrocluster[data]' (pyarrow)"
        ) from None
    try:
        return pa, pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise TypeError(f"{type(frame).__name__} that Arrow cannot hold: {exc}") from None


def _arrow_ipc(frame: Any) -> bytes:
    pa, table = _arrow_table(frame)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


UNNAMED_SERIES = "__series__"
"""The column name a series without a name takes in a frame file."""


def arrow_file(value: Any) -> bytes:
    """A frame (or a series, as its one-column frame) as an Arrow IPC file, for ``.arrow`` results."""
    if not hasattr(value, "columns"):
        value = value.to_frame(name=UNNAMED_SERIES if value.name is None else value.name)
    pa, table = _arrow_table(value)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def read_arrow_file(data: bytes, series: bool) -> Any:
    """What :func:`arrow_file` wrote: the frame, or the series."""
    import pyarrow as pa

    frame = pa.ipc.open_file(pa.py_buffer(data)).read_all().to_pandas()
    if not series:
        return frame
    column = frame.iloc[:, 0]
    if column.name == UNNAMED_SERIES:
        column.name = None
    return column


def encode(value: Any) -> msgpack.ExtType | None:
    """The extension of a typed value; None when ``value`` is of no type this module knows.

    TypeError (which the codec reports as NotSendable) for a known type it cannot send, such as
    an ``object`` array.
    """
    kind = type(value)
    if kind is dt.datetime or isinstance(value, dt.datetime):
        return msgpack.ExtType(DATETIME, _encode_datetime(value))
    if isinstance(value, dt.date):
        return msgpack.ExtType(DATE, _inner([value.year, value.month, value.day]))
    if isinstance(value, dt.time):
        return msgpack.ExtType(TIME, _encode_time(value))
    if isinstance(value, dt.timedelta):
        return msgpack.ExtType(TIMEDELTA, _inner([value.days, value.seconds, value.microseconds]))
    if isinstance(value, decimal.Decimal):
        text = str(value)
        if len(text) > MAX_DECIMAL_CHARS:  # refused here, not by the receiver after the trip
            raise TypeError(f"a Decimal of {len(text)} characters (at most {MAX_DECIMAL_CHARS} are sent)")
        return msgpack.ExtType(DECIMAL, text.encode("ascii"))
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(UUID, value.bytes)
    if kind is valueref.ValueRef:
        return value.ext()
    module = kind.__module__.partition(".")[0]
    if module == "numpy":
        np = sys.modules["numpy"]
        if isinstance(value, np.ndarray):
            return msgpack.ExtType(NDARRAY, _numpy_array(value))
        if isinstance(value, np.generic):
            return msgpack.ExtType(NPSCALAR, _numpy_scalar(value))
    if module == "pandas":
        pd = sys.modules["pandas"]
        if isinstance(value, pd.DataFrame):
            return msgpack.ExtType(DATAFRAME, _arrow_ipc(value))
        if isinstance(value, pd.Series):
            frame = value.to_frame(name="__series__" if value.name is None else value.name)
            return msgpack.ExtType(SERIES, _inner([value.name is None, _arrow_ipc(frame)]))
    return None


def unsendable(value: Any) -> str | None:
    """Why a value of a known type cannot be sent (``ndarray of dtype object``), else None."""
    try:
        encode(value)
    except TypeError as exc:
        return str(exc)
    return None


def known(value: Any) -> bool:
    """Whether ``value`` is of a type this module sends (whatever its content)."""
    if isinstance(value, (dt.date, dt.time, dt.timedelta, decimal.Decimal, uuid.UUID)):
        return True
    return type(value).__module__.partition(".")[0] in ("numpy", "pandas")


# ---- decoding ----------------------------------------------------------------------------------


def _fields(data: bytes, n: int) -> list[Any]:
    try:
        value = msgpack.unpackb(data, raw=False, max_array_len=16, max_map_len=0, max_str_len=256)
    except Exception as exc:
        raise BadValue(f"not a field list: {type(exc).__name__}") from None
    if not isinstance(value, list) or len(value) != n:
        raise BadValue(f"expected {n} fields")
    return value


def _ints(values: list[Any]) -> list[int]:
    if not all(type(v) is int for v in values):
        raise BadValue("a field that should be an int is not")
    return values


def _tz(zone: Any) -> dt.tzinfo | None:
    if zone is None:
        return None
    if isinstance(zone, list) and len(zone) == 2 and zone[0] == "zone" and isinstance(zone[1], str):
        import zoneinfo

        try:
            return zoneinfo.ZoneInfo(zone[1])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise BadValue(f"unknown time zone {zone[1][:60]!r}") from exc
    if isinstance(zone, list) and len(zone) == 2 and zone[0] == "offset" and type(zone[1]) in (int, float):
        try:
            return dt.timezone(dt.timedelta(seconds=zone[1]))
        except (ValueError, OverflowError) as exc:
            raise BadValue(f"a UTC offset of {zone[1]} s") from exc
    raise BadValue("a time zone that is neither a key nor an offset")


def _datetime(data: bytes) -> dt.datetime:
    f = _fields(data, 9)
    try:
        y, mo, d, h, mi, sec, us, fold = _ints(f[:8])
        return dt.datetime(y, mo, d, h, mi, sec, us, tzinfo=_tz(f[8]), fold=fold)
    except (ValueError, OverflowError) as exc:
        raise BadValue(f"not a datetime: {exc}") from None


def _date(data: bytes) -> dt.date:
    try:
        return dt.date(*_ints(_fields(data, 3)))
    except (ValueError, OverflowError) as exc:
        raise BadValue(f"not a date: {exc}") from None


def _time(data: bytes) -> dt.time:
    f = _fields(data, 6)
    try:
        h, mi, sec, us, fold = _ints(f[:5])
        return dt.time(h, mi, sec, us, tzinfo=_tz(f[5]), fold=fold)
    except (ValueError, OverflowError) as exc:
        raise BadValue(f"not a time: {exc}") from None


def _timedelta(data: bytes) -> dt.timedelta:
    try:
        days, seconds, micro = _ints(_fields(data, 3))
        return dt.timedelta(days=days, seconds=seconds, microseconds=micro)
    except (ValueError, OverflowError) as exc:
        raise BadValue(f"not a timedelta: {exc}") from None


def _decimal(data: bytes) -> decimal.Decimal:
    text = data.decode("ascii", "replace")
    if len(text) > MAX_DECIMAL_CHARS or not _DECIMAL.fullmatch(text):
        raise BadValue(f"not a decimal: {text[:40]!r}")
    return decimal.Decimal(text)


def _uuid(data: bytes) -> uuid.UUID:
    if len(data) != 16:
        raise BadValue(f"a UUID of {len(data)} bytes")
    return uuid.UUID(bytes=data)


def dtype_of(np: Any, descr: Any) -> Any:
    """The numpy dtype an array header names; BadValue for one holding Python objects."""
    if isinstance(descr, list):  # a structured dtype: [[name, format], ...]
        if not all(isinstance(f, list) and len(f) in (2, 3) and isinstance(f[0], str) for f in descr):
            raise BadValue("a structured dtype that is not [name, format] pairs")
        descr = [tuple(tuple(x) if isinstance(x, list) else x for x in f) for f in descr]
    elif not isinstance(descr, str):
        raise BadValue("a dtype that is neither a string nor a field list")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError) as exc:
        raise BadValue(f"not a dtype: {exc}") from None
    if dtype.hasobject:
        raise BadValue("a dtype holding Python objects")
    return dtype


def _ndarray(data: bytes) -> Any:
    np = _numpy()
    head_len = int.from_bytes(data[:4], "little")
    if len(data) < 4 + head_len:
        raise BadValue("a truncated array header")
    try:
        descr, shape, fortran = msgpack.unpackb(
            data[4 : 4 + head_len], raw=False, max_array_len=4096, max_str_len=4096
        )
    except Exception as exc:
        raise BadValue(f"not an array header: {type(exc).__name__}") from None
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape) and len(shape) <= 64):
        raise BadValue("an array shape that is not a list of counts")
    dtype = dtype_of(np, descr)
    body = memoryview(data)[4 + head_len :]
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(body):
        raise BadValue(f"an array of {len(body)} bytes for shape {shape} of {dtype}")
    return np.ndarray(tuple(shape), dtype=dtype, buffer=body, order="F" if fortran else "C")


def _npscalar(data: bytes) -> Any:
    np = _numpy()
    try:
        descr, raw = msgpack.unpackb(data, raw=False, max_array_len=2, max_str_len=4096)
    except Exception as exc:
        raise BadValue(f"not a numpy scalar: {type(exc).__name__}") from None
    dtype = dtype_of(np, descr)
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise BadValue("numpy scalar bytes of the wrong size")
    return np.frombuffer(raw, dtype=dtype)[0]


def _frame(data: bytes) -> Any:
    try:
        import pyarrow as pa
    except ImportError:
        raise BadValue("a data frame, and this process lacks the data extra (pyarrow)") from None
    try:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all().to_pandas()
    except (pa.ArrowException, ValueError, TypeError, KeyError) as exc:
        raise BadValue(f"not an Arrow IPC stream: {exc}") from None


def _series(data: bytes) -> Any:
    try:
        unnamed, ipc = msgpack.unpackb(data, raw=False, max_array_len=2)
    except Exception as exc:
        raise BadValue(f"not a series: {type(exc).__name__}") from None
    if type(unnamed) is not bool or not isinstance(ipc, bytes):
        raise BadValue("not a series")
    frame = _frame(ipc)
    if frame.shape[1] != 1:
        raise BadValue("a series of more than one column")
    series = frame.iloc[:, 0]
    if unnamed:
        series.name = None
    return series


def _valueref(data: bytes) -> valueref.ValueRef:
    try:
        return valueref.decode(data)
    except valueref.BadReference as exc:
        raise BadValue(str(exc)) from None


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise BadValue("a numpy value, and this process lacks numpy") from None
    return numpy


DECODERS: dict[int, tuple[str, Callable[[bytes], Any]]] = {
    DATETIME: ("datetime", _datetime),
    DATE: ("date", _date),
    TIME: ("time", _time),
    TIMEDELTA: ("timedelta", _timedelta),
    DECIMAL: ("decimal", _decimal),
    UUID: ("UUID", _uuid),
    NDARRAY: ("ndarray", _ndarray),
    NPSCALAR: ("numpy scalar", _npscalar),
    DATAFRAME: ("DataFrame", _frame),
    SERIES: ("Series", _series),
    valueref.VALUEREF: ("value reference", _valueref),
}
"""Extension code -> (name, decoder); each decoder raises only BadValue for bad bytes."""
