from worldenv.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpenRequest(_message.Message):
    __slots__ = ("frames", "proprio", "instructions")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    PROPRIO_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    frames: _tensor_pb2.Tensor
    proprio: _tensor_pb2.Tensor
    instructions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, frames: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., proprio: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., instructions: _Optional[_Iterable[str]] = ...) -> None: ...

class OpenResponse(_message.Message):
    __slots__ = ("session_ids", "timing")
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    timing: _tensor_pb2.ServerTiming
    def __init__(self, session_ids: _Optional[_Iterable[str]] = ..., timing: _Optional[_Union[_tensor_pb2.ServerTiming, _Mapping]] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("session_ids", "actions")
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    actions: _tensor_pb2.Tensor
    def __init__(self, session_ids: _Optional[_Iterable[str]] = ..., actions: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("frames", "proprio", "steps", "timing")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    PROPRIO_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    frames: _tensor_pb2.Tensor
    proprio: _tensor_pb2.Tensor
    steps: _containers.RepeatedScalarFieldContainer[int]
    timing: _tensor_pb2.ServerTiming
    def __init__(self, frames: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., proprio: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., steps: _Optional[_Iterable[int]] = ..., timing: _Optional[_Union[_tensor_pb2.ServerTiming, _Mapping]] = ...) -> None: ...

class CloseRequest(_message.Message):
    __slots__ = ("session_ids",)
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CloseResponse(_message.Message):
    __slots__ = ("closed",)
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    closed: int
    def __init__(self, closed: _Optional[int] = ...) -> None: ...
