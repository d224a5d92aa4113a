"""gRPC (de)serializers for the messages that carry Tensors: frame bytes are written once and
read as numpy views over the received buffer, and the bytes are exactly protobuf's.

A message with Tensor fields travels as a `WireMessage`: a protobuf message holds its other
fields, `arrays` its Tensor fields as numpy arrays. `MessageCodec(cls)` writes one (or a plain
protobuf message of `cls`) and parses received bytes into one. `Stub` (client) and
`add_servicer` (server) register these codecs for every method whose request or reply carries
Tensors, and protobuf's own for the rest, so stock protobuf peers interoperate on both sides.
"""
from __future__ import annotations

import functools

import grpc
import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from worldenv.v1 import tensor_pb2
from worldenv.wire import codec
from worldenv.wire.codec import CodecError


_NATIVE = frozenset(codec.numpy_dtype(code) for code in tensor_pb2.DType.values() if code)  # sendable as they are


class WireMessage:
    """A message whose Tensor fields are numpy arrays: `message` (protobuf) holds the other
    fields and reads through as attributes; `array(name)` gives a Tensor field. A received
    message keeps a tensor that failed to decode as its CodecError, raised on access, so the
    error names the field; `error` is set when the bytes were no message at all."""

    __slots__ = ("message", "arrays", "error")

    def __init__(self, message: Message, arrays: dict | None = None, **fields):
        self.message, self.error = message, None
        self.arrays = {**arrays, **fields} if arrays else fields
        tensors = tensor_fields(message.DESCRIPTOR).values()
        for name, value in self.arrays.items():
            if name not in tensors:
                raise ValueError(f"{message.DESCRIPTOR.name}.{name}: not a Tensor field")
            if isinstance(value, np.ndarray) and value.dtype not in _NATIVE:
                codec.dtype_code(value.dtype, name)  # an unsendable dtype fails here, naming the field

    @classmethod
    def received(cls, message: Message, arrays: dict, error: CodecError | None = None) -> "WireMessage":
        """A parsed message: its arrays (or CodecErrors) as decoded, unchecked again."""
        received = cls.__new__(cls)
        received.message, received.arrays, received.error = message, arrays, error
        return received

    def array(self, name: str) -> np.ndarray | None:
        """Tensor field `name` as an array (read-only when received), None when absent."""
        self._raise_error()
        value = self.arrays.get(name)
        if isinstance(value, CodecError):
            raise value
        return value

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's spelling
        self._raise_error()
        if name in tensor_fields(self.message.DESCRIPTOR).values():
            return self.arrays.get(name) is not None
        return self.message.HasField(name)

    def __getattr__(self, name: str):
        if name in WireMessage.__slots__:
            raise AttributeError(name)
        self._raise_error()
        if name in tensor_fields(self.message.DESCRIPTOR).values():
            raise AttributeError(f"{name}: a Tensor field; read it with .array({name!r})")
        return getattr(self.message, name)

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def to_message(self) -> Message:
        """The equivalent protobuf message (a copy of every array)."""
        self._raise_error()
        message = type(self.message)()
        message.CopyFrom(self.message)
        for name in tensor_fields(message.DESCRIPTOR).values():
            value = self.array(name)
            if value is not None:
                getattr(message, name).CopyFrom(codec.encode(value, name))
        return message


@functools.cache
def tensor_fields(descriptor: Descriptor) -> dict[int, str]:
    """Field number -> name of the message's Tensor fields, in number order."""
    fields = sorted(descriptor.fields, key=lambda f: f.number)
    return {f.number: f.name for f in fields
            if f.message_type is tensor_pb2.Tensor.DESCRIPTOR and not f.is_repeated}


class _Fallback(Exception):
    """Bytes the fast reader leaves to protobuf (a Tensor field sent twice, a group)."""


class MessageCodec:
    """Writes and reads one message class with Tensor fields, byte for byte as protobuf does."""

    def __init__(self, cls: type[Message]):
        self.cls, self.name = cls, cls.DESCRIPTOR.name
        self.tensors = tensor_fields(cls.DESCRIPTOR)
        if not self.tensors:
            raise ValueError(f"{self.name}: has no Tensor field")
        self.keys = {name: codec.varint(number << 3 | 2) for number, name in self.tensors.items()}
        # protobuf writes fields in number order: the others go before or after the tensors, or
        # some before and some after (ObserveRequest: session_ids, frames, eta), split on writing
        others = [f.number for f in cls.DESCRIPTOR.fields if f.number not in self.tensors]
        low, high = min(self.tensors), max(self.tensors)
        if any(low < n < high for n in others):
            raise ValueError(f"{self.name}: other fields numbered between its Tensor fields")
        self.before = frozenset(n for n in others if n < low)  # numbers of the fields written first
        self.tensors_first = not self.before
        self.split = bool(self.before) and any(n > high for n in others)
        self._prefixes: dict[tuple, bytes] = {}

    def serialize(self, value: WireMessage | Message) -> bytes:
        if isinstance(value, Message):
            return value.SerializeToString()
        rest = value.message.SerializeToString()
        if self.split:
            head, rest = self._split_rest(rest)
            parts = [head]
        else:
            parts = [] if self.tensors_first else [rest]
        for name in self.tensors.values():
            arr = value.arrays.get(name)
            if value.message.HasField(name):
                raise ValueError(f"{self.name}.{name}: set in the protobuf message; pass it as an array")
            if isinstance(arr, CodecError):
                raise arr
            if arr is not None:
                parts += self._tensor(name, arr)
        if self.tensors_first or self.split:
            parts.append(rest)
        return b"".join(parts)

    def _split_rest(self, rest: bytes) -> tuple[bytes, bytes]:
        """protobuf's bytes of the other fields (written in number order, unknown fields last)
        -> (the fields numbered below the tensors, the rest)."""
        pos, end = 0, len(rest)
        while pos < end:
            key, at = codec.read_varint(rest, pos, self.name)
            if key >> 3 not in self.before:
                break
            wire = key & 7
            if wire == 2:
                length, at = codec.read_varint(rest, at, self.name)
                at += length
            elif wire == 0:
                _, at = codec.read_varint(rest, at, self.name)
            elif wire in (1, 5):
                at += 8 if wire == 1 else 4
            else:
                break  # no field of these messages is a group
            pos = at
        return rest[:pos], rest[pos:]

    def _tensor(self, name: str, arr: np.ndarray) -> tuple[bytes, object]:
        """(field key, length and Tensor header; the array's bytes) of Tensor field `name`. The
        first part is kept per (field, dtype, shape) of C-ordered arrays: batches repeat them."""
        plain = type(arr) is np.ndarray and arr.flags.c_contiguous and arr.dtype.byteorder != ">"
        if plain:
            prefix = self._prefixes.get((name, arr.dtype, arr.shape))
            if prefix is not None:
                return prefix, arr
        header, data = codec.tensor_parts(arr, name)
        prefix = self.keys[name] + codec.varint(len(header) + len(data)) + header
        if plain and len(self._prefixes) < 1024:
            self._prefixes[name, arr.dtype, arr.shape] = prefix
        return prefix, data

    def parse(self, buf: bytes) -> WireMessage:
        """Never raises: bytes that are no message, or a field that is no tensor, become errors
        raised when the receiver reads the message or that field."""
        view = memoryview(buf)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        try:
            rest, slices = self._split(view)
            message = self.cls.FromString(rest)
        except _Fallback:
            return self._parse_with_protobuf(buf)
        except (CodecError, DecodeError) as exc:
            return WireMessage.received(self.cls(), {}, CodecError(f"{self.name}: not a valid message ({exc})"))
        arrays = {}
        for name, data in slices.items():
            try:
                arrays[name] = codec.from_bytes(data, name)
            except CodecError as exc:
                arrays[name] = exc
        return WireMessage.received(message, arrays)

    def _split(self, view: memoryview) -> tuple[bytes, dict[str, memoryview]]:
        """(the bytes of the non-Tensor fields, Tensor field name -> view of its message bytes)."""
        rest, slices, rest_from, pos, end = [], {}, 0, 0, len(view)
        while pos < end:
            start, key = pos, view[pos]
            pos += 1
            if key > 0x7F:
                key, pos = codec.read_varint(view, start, self.name)
            number, wire = key >> 3, key & 7
            if wire == 2:
                length, pos = codec.read_varint(view, pos, self.name)
                pos += length
                name = self.tensors.get(number)
                if pos > end:
                    raise CodecError(f"{name or number}: truncated message")
                if name is not None:
                    if name in slices:
                        raise _Fallback  # protobuf merges repeated occurrences of a message field
                    slices[name] = view[pos - length:pos]
                    rest.append(view[rest_from:start])
                    rest_from = pos
            elif wire == 0:
                _, pos = codec.read_varint(view, pos, self.name)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                raise _Fallback
        if pos > end:
            raise CodecError(f"{self.name}: truncated message")
        rest.append(view[rest_from:end])
        return b"".join(rest), slices

    def _parse_with_protobuf(self, buf: bytes) -> WireMessage:
        try:
            message = self.cls.FromString(bytes(buf))
        except DecodeError as exc:
            return WireMessage.received(self.cls(), {}, CodecError(f"{self.name}: not a valid message ({exc})"))
        arrays = {}
        for name in self.tensors.values():
            if message.HasField(name):
                try:
                    arrays[name] = codec.decode(getattr(message, name), name)
                except CodecError as exc:
                    arrays[name] = exc
                message.ClearField(name)
        return WireMessage.received(message, arrays)


class ProtobufCodec:
    """protobuf's own (de)serializers, for messages without Tensor fields."""

    def __init__(self, cls: type[Message]):
        self.cls, self.serialize, self.parse = cls, cls.SerializeToString, cls.FromString


@functools.cache
def codec_for(descriptor: Descriptor) -> MessageCodec | ProtobufCodec:
    cls = message_factory.GetMessageClass(descriptor)
    return MessageCodec(cls) if tensor_fields(descriptor) else ProtobufCodec(cls)


def _path(service: ServiceDescriptor, method) -> str:
    return f"/{service.full_name}/{method.name}"


_CHANNEL_CALLS = {(False, False): "unary_unary", (False, True): "unary_stream",
                  (True, False): "stream_unary", (True, True): "stream_stream"}
_HANDLERS = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}


class Stub:
    """Client stub of `service` on `channel`: one callable per method, like the generated
    stub's; methods with Tensors take and return WireMessages (plain messages are accepted)."""

    def __init__(self, channel: grpc.Channel, service: ServiceDescriptor):
        for method in service.methods:
            kind = _CHANNEL_CALLS[method.client_streaming, method.server_streaming]
            call = getattr(channel, kind)(_path(service, method),
                                          request_serializer=codec_for(method.input_type).serialize,
                                          response_deserializer=codec_for(method.output_type).parse,
                                          _registered_method=True)
            setattr(self, method.name, call)


def method_handlers(servicer, service: ServiceDescriptor) -> dict[str, grpc.RpcMethodHandler]:
    """Method name -> handler calling `servicer.<name>` with the codecs of its messages."""
    handlers = {}
    for method in service.methods:
        handler = _HANDLERS[method.client_streaming, method.server_streaming]
        handlers[method.name] = handler(getattr(servicer, method.name),
                                        request_deserializer=codec_for(method.input_type).parse,
                                        response_serializer=codec_for(method.output_type).serialize)
    return handlers


def add_servicer(servicer, server, service: ServiceDescriptor) -> None:
    """What the generated add_*Servicer_to_server does, with these codecs."""
    server.add_registered_method_handlers(service.full_name, method_handlers(servicer, service))
