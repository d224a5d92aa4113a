"""Request validation: decode Tensor fields and check dtype, shape and values, with messages
that name the field and say what was expected."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worldenv.services.common.errors import InvalidArgument, ResourceExhausted
from worldenv.wire import codec
from worldenv.wire.grpc_codec import WireMessage

# A shape pattern: ints are fixed sizes, None is free, "B" must equal the batch size.
Dim = int | str | None


def _fmt(pattern: Sequence[Dim]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in pattern) + ")"


def tensor(msg, field: str, dtype: str, pattern: Sequence[Dim] | None, batch: int | None = None,
           finite: bool = False) -> np.ndarray:
    """Decode `msg.<field>` and check it against `dtype` and `pattern` (None: any shape)."""
    arr = _array(msg, field)
    if arr is None:
        raise InvalidArgument(f"{field}: missing; expected {dtype} {_fmt(pattern or ['...'])}")
    if arr.dtype != np.dtype(dtype):
        raise InvalidArgument(f"{field}: expected dtype {dtype}, got {arr.dtype.name} with shape {list(arr.shape)}")
    if pattern is not None:
        check_shape(arr, field, pattern, batch)
    if finite and arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise InvalidArgument(f"{field}: must be finite; found {arr[tuple(bad)]} at index {bad}")
    return arr


def _array(msg, field: str) -> np.ndarray | None:
    """Tensor field `field` of a received WireMessage (already a view) or protobuf message;
    None when absent, CodecError naming the field when its bytes are no tensor."""
    if isinstance(msg, WireMessage):
        return msg.array(field)
    return codec.decode(getattr(msg, field), field) if msg.HasField(field) else None


def check_shape(arr: np.ndarray, field: str, pattern: Sequence[Dim], batch: int | None = None) -> None:
    expected = _fmt([batch if d == "B" and batch is not None else d for d in pattern])
    if arr.ndim != len(pattern):
        raise InvalidArgument(f"{field}: expected shape {expected}, got {list(arr.shape)}")
    for size, want in zip(arr.shape, pattern):
        if want == "B":
            if batch is not None and size != batch:
                raise InvalidArgument(f"{field}: batch size {size} disagrees with {batch}; expected shape {expected}")
            if size < 1:
                raise InvalidArgument(f"{field}: empty batch; expected shape {expected} with B >= 1")
        elif want is not None and size != want:
            raise InvalidArgument(f"{field}: expected shape {expected}, got {list(arr.shape)}")


def strings(values: Sequence[str], field: str, batch: int, allow_empty: bool = True) -> list[str]:
    """A repeated string field of length B (or empty, meaning B empty strings)."""
    values = list(values)
    if not values and allow_empty:
        return [""] * batch
    if len(values) != batch:
        raise InvalidArgument(f"{field}: expected {batch} entries (one per batch item), got {len(values)}")
    return values


def session_ids(values: Sequence[str], call: str) -> list[str]:
    """The session ids of one call: at least one, each at most once."""
    ids = list(values)
    if not ids or len(set(ids)) != len(ids):
        raise InvalidArgument(f"session_ids: expected at least one session id, each at most once per {call}")
    return ids


def probability(value: float, field: str, default: float) -> float:
    """A threshold in (0, 1); 0 means the default."""
    if value == 0:
        return default
    if not 0 < value < 1 or not np.isfinite(value):
        raise InvalidArgument(f"{field}: expected a value in (0, 1) or 0 for the default, got {value}")
    return float(value)


def request_size(batch: int, field: str, max_items: int, reply_bytes: int, max_reply_bytes: int) -> None:
    """Refuse, before any compute, a request of more than `max_items` items or one whose reply
    (`reply_bytes`, estimated from the item count) could not be sent."""
    if batch > max_items:
        raise ResourceExhausted(f"{field}: {batch} items in one request, limit {max_items} (max_request_items); "
                                f"split the request")
    if reply_bytes > max_reply_bytes:
        raise ResourceExhausted(f"{field}: the reply to {batch} items would be about {reply_bytes} bytes, over the "
                                f"send limit of {max_reply_bytes} bytes (max_message_mb); split the request")
