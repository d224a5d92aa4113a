from worldenv.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JudgeRequest(_message.Message):
    __slots__ = ("frames", "instructions", "eta")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    frames: _tensor_pb2.Tensor
    instructions: _containers.RepeatedScalarFieldContainer[str]
    eta: float
    def __init__(self, frames: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., instructions: _Optional[_Iterable[str]] = ..., eta: _Optional[float] = ...) -> None: ...

class JudgeResponse(_message.Message):
    __slots__ = ("p_done", "done", "eta", "timing")
    P_DONE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    p_done: _tensor_pb2.Tensor
    done: _containers.RepeatedScalarFieldContainer[bool]
    eta: float
    timing: _tensor_pb2.ServerTiming
    def __init__(self, p_done: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., done: _Optional[_Iterable[bool]] = ..., eta: _Optional[float] = ..., timing: _Optional[_Union[_tensor_pb2.ServerTiming, _Mapping]] = ...) -> None: ...
