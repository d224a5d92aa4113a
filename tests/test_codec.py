"""Codec round trips: every dtype, empty tensors, large frames, both paths, wire compatibility."""
import numpy as np
import pytest

from worldenv.v1 import tensor_pb2
from worldenv.wire import codec

DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float16", "float32", "float64", "bool"]


def sample(dtype: str, shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (2, 3, 4)])
def test_round_trip_every_dtype_and_shape(dtype, shape):
    arr = sample(dtype, shape)
    for out in (codec.decode(codec.encode(arr)), codec.from_bytes(codec.to_bytes(arr))):
        assert out.dtype == arr.dtype and out.shape == arr.shape
        np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_path_is_wire_compatible_with_protobuf(dtype):
    arr = sample(dtype, (2, 3))
    parsed = tensor_pb2.Tensor.FromString(codec.to_bytes(arr))
    np.testing.assert_array_equal(codec.decode(parsed), arr)
    np.testing.assert_array_equal(codec.from_bytes(codec.encode(arr).SerializeToString()), arr)


def test_large_frames_decode_without_copy():
    frames = np.random.default_rng(1).integers(0, 256, (8, 256, 256, 3), dtype=np.uint8)
    buf = codec.to_bytes(frames)
    out = codec.from_bytes(buf)
    np.testing.assert_array_equal(out, frames)
    assert np.shares_memory(out, np.frombuffer(buf, np.uint8))  # a view into the received buffer
    assert not out.flags.writeable


def test_non_contiguous_and_big_endian_inputs():
    arr = np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2]
    for out in (codec.decode(codec.encode(arr)), codec.from_bytes(codec.to_bytes(arr))):
        np.testing.assert_array_equal(out, arr)
        assert out.dtype == np.dtype("<i4")


def test_negative_and_huge_dims_survive_varint_encoding():
    t = tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT32, shape=[-1, 2])
    with pytest.raises(codec.CodecError, match="negative dimension"):
        codec.from_bytes(t.SerializeToString())


@pytest.mark.parametrize("bad, match", [
    (tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT32, shape=[2, 2], data=b"\0" * 15), "frames.data: 15 bytes"),
    (tensor_pb2.Tensor(dtype=0, shape=[1], data=b"\0"), "frames.dtype"),
    (tensor_pb2.Tensor(dtype=99, shape=[1], data=b"\0"), "frames.dtype"),
])
def test_malformed_tensors_name_the_field(bad, match):
    with pytest.raises(codec.CodecError, match=match):
        codec.decode(bad, "frames")
    with pytest.raises(codec.CodecError, match=match):
        codec.from_bytes(bad.SerializeToString(), "frames")


def test_object_dtype_is_refused():
    with pytest.raises(codec.CodecError, match="not supported"):
        codec.encode(np.array(["a", "b"], dtype=object), "instructions")


def test_truncated_message_is_an_error():
    buf = codec.to_bytes(np.zeros((4, 4), np.float32))
    with pytest.raises(codec.CodecError):
        codec.from_bytes(buf[:-3])


@pytest.mark.parametrize("shape, words", [
    ([0, 2**40, 2**40], ["frames.shape", "too large"]),
    ([2**40, 2**40, 0, 2**40], ["frames.shape", "too large"]),
    ([0] * 40, ["frames.shape", "40 dimensions"]),
])
def test_empty_tensor_with_impossible_shape_names_the_field(shape, words):
    """An empty tensor whose other dimensions no array can have is the sender's error, not a crash."""
    bad = tensor_pb2.Tensor(dtype=tensor_pb2.UINT8, shape=shape)
    for decode in (lambda: codec.decode(bad, "frames"), lambda: codec.from_bytes(bad.SerializeToString(), "frames")):
        with pytest.raises(codec.CodecError) as info:
            decode()
        assert all(w in str(info.value) for w in words), str(info.value)


def test_empty_tensor_with_large_but_possible_shape_still_decodes():
    t = tensor_pb2.Tensor(dtype=tensor_pb2.UINT8, shape=[0, 2**31, 2**31])
    assert codec.decode(t).shape == codec.from_bytes(t.SerializeToString()).shape == (0, 2**31, 2**31)
