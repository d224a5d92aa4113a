"""Tensor <-> numpy codec: one encoding for gRPC messages and for the Redis queue.

`encode`/`decode` convert between numpy arrays and `worldenv.v1.Tensor` messages.
`to_bytes`/`from_bytes` write and read the *serialized* Tensor message directly: the frame
bytes are written once (a small header + the array's buffer) and decoded by pointing
`np.frombuffer` into the received buffer, so a large frame batch is never copied on decode.
Both paths are wire-compatible: protobuf parses `to_bytes` output and `from_bytes` reads
protobuf's `SerializeToString`.
"""
from __future__ import annotations

import numpy as np

from worldenv.v1 import tensor_pb2 as pb


class CodecError(ValueError):
    """A tensor could not be encoded or decoded; the message names the field."""


_TO_NUMPY = {
    pb.UINT8: np.dtype("<u1"), pb.INT8: np.dtype("<i1"), pb.UINT16: np.dtype("<u2"),
    pb.INT16: np.dtype("<i2"), pb.UINT32: np.dtype("<u4"), pb.INT32: np.dtype("<i4"),
    pb.UINT64: np.dtype("<u8"), pb.INT64: np.dtype("<i8"), pb.FLOAT16: np.dtype("<f2"),
    pb.FLOAT32: np.dtype("<f4"), pb.FLOAT64: np.dtype("<f8"), pb.BOOL: np.dtype("?"),
}
_FROM_NUMPY = {dt.newbyteorder("=") if dt.byteorder != "|" else dt: code for code, dt in _TO_NUMPY.items()}
_FROM_NUMPY.update({dt: code for code, dt in _TO_NUMPY.items()})


def dtype_code(dtype: np.dtype, field: str = "tensor") -> int:
    """The wire DType enum value for a numpy dtype."""
    dt = np.dtype(dtype)
    code = _FROM_NUMPY.get(dt.newbyteorder("<") if dt.byteorder in "<>=" else dt)
    if code is None:
        raise CodecError(f"{field}: dtype {dt} is not supported on the wire (numeric and bool only)")
    return code


def numpy_dtype(code: int, field: str = "tensor") -> np.dtype:
    """The numpy dtype for a wire DType enum value."""
    try:
        return _TO_NUMPY[code]
    except KeyError:
        raise CodecError(f"{field}.dtype: unknown or unspecified dtype enum {code}") from None


def dtype_name(code: int) -> str:
    return pb.DType.Name(code) if code in pb.DType.values() else str(code)


def _little_endian(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d arrays 0-d


def encode(arr: np.ndarray, field: str = "tensor") -> pb.Tensor:
    """numpy array -> Tensor message (one copy, into the message)."""
    arr = _little_endian(arr)
    code = dtype_code(arr.dtype, field)
    return pb.Tensor(dtype=code, shape=arr.shape, data=arr.tobytes())


MAX_DIMS = 32                      # numpy allows more; no tensor of this project has more than 6
_MAX_BYTES = np.iinfo(np.intp).max  # numpy's bound on an array's size in bytes, zero dimensions aside


def check_shape(shape: tuple[int, ...], dtype: np.dtype, field: str) -> int:
    """The item count of `shape`, or CodecError naming `field` when no array can have it: a
    negative dimension, too many dimensions, or sizes whose product numpy cannot index (it
    checks that product even when another dimension is 0, so [0, 2**40, 2**40] is refused too)."""
    if any(d < 0 for d in shape):
        raise CodecError(f"{field}.shape: negative dimension in {list(shape)}")
    if len(shape) > MAX_DIMS:
        raise CodecError(f"{field}.shape: {len(shape)} dimensions, at most {MAX_DIMS} allowed")
    count, nonzero = 1, dtype.itemsize
    for d in shape:
        count *= d
        nonzero *= d or 1
    if nonzero > _MAX_BYTES:
        raise CodecError(f"{field}.shape: {list(shape)} of {dtype.name} is too large for any array")
    return count


def _view(data, dtype: np.dtype, shape: tuple[int, ...], offset: int, field: str) -> np.ndarray:
    count = check_shape(shape, dtype, field)
    nbytes = count * dtype.itemsize
    available = len(data) - offset
    if available != nbytes:
        raise CodecError(f"{field}.data: {available} bytes do not match shape {list(shape)} of "
                         f"{dtype.name} ({nbytes} bytes expected)")
    if count == 0:
        return np.empty(shape, dtype)
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


def decode(tensor: pb.Tensor, field: str = "tensor") -> np.ndarray:
    """Tensor message -> read-only numpy view of its bytes (no copy beyond protobuf's own)."""
    dtype = numpy_dtype(tensor.dtype, field)
    return _view(tensor.data, dtype, tuple(tensor.shape), 0, field)


# ---- serialized-message fast path -------------------------------------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf writes negative varints
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf, pos: int, field: str) -> tuple[int, int]:
    """The varint at `pos` of `buf` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CodecError(f"{field}: truncated or malformed varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


_HEADERS: dict[tuple, bytes] = {}  # (dtype, shape) -> header bytes; frame batches repeat shapes


def _header(arr: np.ndarray, field: str) -> bytes:
    key = (arr.dtype.str, arr.shape)
    header = _HEADERS.get(key)
    if header is None:
        code = dtype_code(arr.dtype, field)
        dims = b"".join(_varint(d) for d in arr.shape)
        header = b"\x08" + _varint(code)
        if dims:
            header += b"\x12" + _varint(len(dims)) + dims
        if arr.nbytes:
            header += b"\x1a" + _varint(arr.nbytes)
        if len(_HEADERS) < 4096:
            _HEADERS[key] = header
    return header


def tensor_parts(arr: np.ndarray, field: str = "tensor") -> tuple[bytes, memoryview | bytes]:
    """numpy array -> (header, data) of its serialized Tensor message, whose bytes are the two
    joined; `data` is a view of the array's buffer (a copy only for non-contiguous or big-endian
    input), so a writer that joins it with other parts copies the frames once."""
    if type(arr) is not np.ndarray or not arr.flags.c_contiguous or arr.dtype.byteorder == ">":
        arr = _little_endian(arr)
    header = _header(arr, field)
    return header, (memoryview(arr).cast("B") if arr.nbytes else b"")


def to_bytes(arr: np.ndarray, field: str = "tensor") -> bytes:
    """numpy array -> serialized Tensor message; the array's bytes are written once."""
    header, data = tensor_parts(arr, field)
    return b"".join((header, data)) if data else header


_LAYOUTS: dict[bytes, tuple] = {}  # dtype and shape bytes -> (dtype, shape, count, nbytes), checked


def _layout(head: bytes, field: str) -> tuple | None:
    """(dtype, shape, item count, data bytes) of a canonical header's dtype and shape fields,
    checked by `check_shape`; None when the shape bytes are not one packed varint list."""
    layout = _LAYOUTS.get(head)
    if layout is None:
        shape, pos = [], 4
        while pos < len(head):
            value, pos = _read_varint(head, pos, field)
            shape.append(value - (1 << 64) if value >> 63 else value)
        if pos != len(head):
            return None
        dtype = numpy_dtype(head[1], field)
        count = check_shape(tuple(shape), dtype, field)
        layout = (dtype, tuple(shape), count, count * dtype.itemsize)
        if len(_LAYOUTS) < 4096:
            _LAYOUTS[head] = layout
    return layout


def _from_canonical(buf, field: str) -> np.ndarray | None:
    """Fast path for the layout `to_bytes` writes (dtype, packed shape, data; small varints)."""
    if len(buf) < 4 or buf[0] != 0x08 or buf[1] > 0x7F or buf[2] != 0x12 or buf[3] > 0x7F:
        return None
    end = 4 + buf[3]
    layout = _layout(bytes(buf[:end]), field) if end <= len(buf) else None
    if layout is None:
        return None
    dtype, shape, count, nbytes = layout
    data_at, length = end, 0
    if end < len(buf):
        if buf[end] != 0x1A:
            return None
        length, data_at = _read_varint(buf, end + 1, field)
        if data_at + length != len(buf):
            return None
    if count == 0 or length != nbytes:
        return _view(buf, dtype, shape, data_at, field)  # the empty array, or the error naming the field
    return np.frombuffer(buf, dtype, count, data_at).reshape(shape)


def _parse(view, field: str) -> tuple[int, list[int], int | None, int]:
    """Generic protobuf walk of a Tensor message: (dtype code, shape, data offset, data length).
    Accepts packed or unpacked shape, any field order, and skips unknown fields."""
    pos, code, shape, data_at, data_len = 0, 0, [], None, 0
    while pos < len(view):
        key, pos = _read_varint(view, pos, field)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(view, pos, field)
            if number == 1:
                code = value
            elif number == 2:  # unpacked repeated int64
                shape.append(value - (1 << 64) if value >> 63 else value)
        elif wire == 2:
            length, pos = _read_varint(view, pos, field)
            if pos + length > len(view):
                raise CodecError(f"{field}: truncated message")
            if number == 2:
                p = pos
                while p < pos + length:
                    value, p = _read_varint(view, p, field)
                    shape.append(value - (1 << 64) if value >> 63 else value)
            elif number == 3:
                data_at, data_len = pos, length
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise CodecError(f"{field}: unsupported wire type {wire}")
    return code, shape, data_at, data_len


def from_bytes(buf, field: str = "tensor") -> np.ndarray:
    """Serialized Tensor message -> read-only numpy view into `buf` (no copy)."""
    if isinstance(buf, bytes) or (isinstance(buf, memoryview) and buf.format == "B" and buf.ndim == 1):
        arr = _from_canonical(buf, field)
        if arr is not None:
            return arr
    view = memoryview(buf).cast("B") if not isinstance(buf, (bytes, bytearray)) else buf
    code, shape, data_at, data_len = _parse(view, field)
    dtype = numpy_dtype(code, field)
    if data_at is None:
        return _view(b"", dtype, tuple(shape), 0, field)
    return _view(view[: data_at + data_len], dtype, tuple(shape), data_at, field)


varint, read_varint = _varint, _read_varint  # for writers and readers of the messages around Tensors
