from worldenv.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActRequest(_message.Message):
    __slots__ = ("frames", "proprio", "instructions", "deterministic", "seed")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    PROPRIO_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    frames: _tensor_pb2.Tensor
    proprio: _tensor_pb2.Tensor
    instructions: _containers.RepeatedScalarFieldContainer[str]
    deterministic: bool
    seed: int
    def __init__(self, frames: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., proprio: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., instructions: _Optional[_Iterable[str]] = ..., deterministic: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class ActResponse(_message.Message):
    __slots__ = ("loc", "scale", "actions", "log_probs", "policy_version", "timing")
    LOC_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    LOG_PROBS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    loc: _tensor_pb2.Tensor
    scale: _tensor_pb2.Tensor
    actions: _tensor_pb2.Tensor
    log_probs: _tensor_pb2.Tensor
    policy_version: int
    timing: _tensor_pb2.ServerTiming
    def __init__(self, loc: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., scale: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., actions: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., log_probs: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., policy_version: _Optional[int] = ..., timing: _Optional[_Union[_tensor_pb2.ServerTiming, _Mapping]] = ...) -> None: ...

class WeightsChunk(_message.Message):
    __slots__ = ("data", "total_bytes", "note")
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    total_bytes: int
    note: str
    def __init__(self, data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class LoadWeightsResponse(_message.Message):
    __slots__ = ("policy_version", "bytes_received", "tensors_loaded")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    TENSORS_LOADED_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    bytes_received: int
    tensors_loaded: int
    def __init__(self, policy_version: _Optional[int] = ..., bytes_received: _Optional[int] = ..., tensors_loaded: _Optional[int] = ...) -> None: ...
