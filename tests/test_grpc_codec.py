"""The gRPC messages that carry Tensors: written and read by the wire codec, byte for byte what
stock protobuf writes and reads, in both directions, and served through it."""
import concurrent.futures

import grpc
import numpy as np
import pytest

from servers import serving
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelEndpoint
from worldenv.client.errors import ServiceError
from worldenv.v1 import (policy_pb2, policy_pb2_grpc, reflector_pb2, reflector_pb2_grpc, tensor_pb2, world_model_pb2,
                         world_model_pb2_grpc)
from worldenv.wire import codec, grpc_codec
from worldenv.wire.grpc_codec import MessageCodec, WireMessage

RNG = np.random.default_rng(0)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
TIMING = tensor_pb2.ServerTiming(queue_ms=0.5, compute_ms=1.25, total_ms=2.0, batch_size=3, batch_requests=2)


def u8(*shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# message class, its other fields, its Tensor fields: every message the wire codec writes
CASES = {
    "open": (world_model_pb2.OpenRequest, {"instructions": ["a", "b"]}, {"frames": u8(2, 8, 8, 3), "proprio": f32(2, 8)}),
    "open history": (world_model_pb2.OpenRequest, {}, {"frames": u8(1, 3, 8, 8, 3), "proprio": f32(1, 8)}),
    "step": (world_model_pb2.StepRequest, {"session_ids": ["s1", "s2"]}, {"actions": f32(2, 8, 7)}),
    "step reply": (world_model_pb2.StepResponse, {"steps": [1, 4], "timing": TIMING},
                   {"frames": u8(2, 8, 8, 3), "proprio": f32(2, 8)}),
    "act": (policy_pb2.ActRequest, {"instructions": ["x"], "deterministic": True, "seeds": [2**63 + 5]},
            {"frames": u8(1, 8, 8, 3), "proprio": f32(1, 8)}),
    "act reply": (policy_pb2.ActResponse, {"policy_version": 7, "timing": TIMING},
                  {"loc": f32(64, 8, 7), "scale": f32(64, 8, 7), "actions": f32(64, 8, 7), "log_probs": f32(64)}),
    "judge": (reflector_pb2.JudgeRequest, {"instructions": ["a"], "eta": 0.3}, {"frames": u8(1, 2, 8, 8, 3)}),
    "judge reply": (reflector_pb2.JudgeResponse, {"done": [True, False], "eta": 0.5, "timing": TIMING},
                    {"p_done": np.array([0.7, 0.2], np.float32)}),
    "open videos": (reflector_pb2.OpenVideosRequest, {"instructions": ["a", "b"]}, {"frames": u8(2, 8, 8, 3)}),
    # session_ids before the Tensor field and eta after it: the codec splits the other fields
    "observe": (reflector_pb2.ObserveRequest, {"session_ids": ["s1", "s22"], "eta": 0.3}, {"frames": u8(2, 8, 8, 3)}),
    "observe reply": (reflector_pb2.ObserveResponse, {"done": [False, True], "eta": 0.5, "lengths": [2, 300],
                                                      "timing": TIMING}, {"p_done": np.array([0.1, 0.9], np.float32)}),
    # edge cases
    "empty tensors": (world_model_pb2.StepResponse, {"steps": []}, {"frames": u8(0, 8, 8, 3), "proprio": f32(0)}),
    "0-d tensors": (policy_pb2.ActResponse, {}, {"loc": np.float32(0), "log_probs": np.array(True)}),
    "big-endian": (world_model_pb2.StepRequest, {"session_ids": ["s"]},
                   {"actions": f32(1, 8, 7).astype(">f4")}),
    "non-contiguous": (world_model_pb2.OpenRequest, {}, {"frames": u8(2, 8, 16, 3)[:, :, ::2], "proprio": f32(2, 8).T}),
    "tensors missing": (policy_pb2.ActRequest, {"instructions": ["x"]}, {"proprio": f32(1, 8)}),
    "only tensors": (reflector_pb2.JudgeResponse, {}, {"p_done": f32(3)}),
    "empty message": (world_model_pb2.StepResponse, {}, {}),
    "observe, only ids": (reflector_pb2.ObserveRequest, {"session_ids": ["s"]}, {"frames": u8(1, 8, 8, 3)}),
    "observe, only eta": (reflector_pb2.ObserveRequest, {"eta": 0.25}, {"frames": u8(1, 8, 8, 3)}),
    "observe, no tensor": (reflector_pb2.ObserveRequest, {"session_ids": ["s", "t"], "eta": 0.5}, {}),
}


def stock(cls, fields, arrays):
    """The message as stock protobuf builds it."""
    return cls(**fields, **{name: codec.encode(arr, name) for name, arr in arrays.items()})


def assert_same(parsed: WireMessage, cls, fields, arrays):
    """`parsed` carries exactly `fields` and `arrays` (the arrays as little-endian C order)."""
    assert parsed.to_message() == stock(cls, fields, arrays)
    for name in grpc_codec.tensor_fields(cls.DESCRIPTOR).values():
        got, want = parsed.array(name), arrays.get(name)
        assert (got is None) == (want is None), name
        if want is not None:
            assert got.shape == np.shape(want) and got.dtype == np.asarray(want).dtype.newbyteorder("<"), name
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", CASES)
def test_wire_codec_writes_the_bytes_of_stock_protobuf(case):
    cls, fields, arrays = CASES[case]
    ours = MessageCodec(cls).serialize(WireMessage(cls(**fields), arrays))
    assert ours == stock(cls, fields, arrays).SerializeToString()


@pytest.mark.parametrize("case", CASES)
def test_wire_codec_reads_the_bytes_of_stock_protobuf(case):
    cls, fields, arrays = CASES[case]
    parsed = MessageCodec(cls).parse(stock(cls, fields, arrays).SerializeToString())
    assert parsed.error is None
    assert_same(parsed, cls, fields, arrays)
    for name, arr in parsed.arrays.items():
        assert arr.size == 0 or not (arr.flags.writeable or arr.flags.owndata), name  # views, no copy


def test_fields_in_any_order_and_unknown_fields_read_as_protobuf_reads_them():
    cls, fields, arrays = CASES["step reply"]
    message = stock(cls, fields, arrays)
    parts = [stock(cls, {}, {"proprio": arrays["proprio"]}), cls(**fields), stock(cls, {}, {"frames": arrays["frames"]})]
    unknown = codec.varint(99 << 3 | 0) + codec.varint(5) + codec.varint(98 << 3 | 5) + b"\0" * 4
    data = b"".join(p.SerializeToString() for p in parts) + unknown
    expected = cls.FromString(data)
    assert expected == cls.FromString(message.SerializeToString() + unknown)
    parsed = MessageCodec(cls).parse(data)
    assert parsed.to_message() == expected
    np.testing.assert_array_equal(parsed.array("frames"), arrays["frames"])
    np.testing.assert_array_equal(parsed.array("proprio"), arrays["proprio"])


def test_a_tensor_field_sent_twice_merges_as_protobuf_merges_it():
    first = world_model_pb2.StepRequest(session_ids=["a"], actions=codec.encode(f32(1, 8, 7)))
    second = world_model_pb2.StepRequest(actions=tensor_pb2.Tensor(data=codec.encode(f32(1, 8, 7)).data))
    data = first.SerializeToString() + second.SerializeToString()
    expected = world_model_pb2.StepRequest.FromString(data)
    parsed = MessageCodec(world_model_pb2.StepRequest).parse(data)
    assert parsed.to_message() == expected
    np.testing.assert_array_equal(parsed.array("actions"), codec.decode(expected.actions))


def test_a_bad_tensor_names_its_field_and_leaves_the_others_readable():
    request = policy_pb2.ActRequest(frames=tensor_pb2.Tensor(dtype=tensor_pb2.UINT8, shape=[2, 4], data=b"\0" * 7),
                                    proprio=codec.encode(f32(1, 8)), seeds=[3])
    parsed = MessageCodec(policy_pb2.ActRequest).parse(request.SerializeToString())
    with pytest.raises(codec.CodecError, match="frames.data: 7 bytes"):
        parsed.array("frames")
    assert parsed.array("proprio").shape == (1, 8) and list(parsed.seeds) == [3]


@pytest.mark.parametrize("data, words", [
    (world_model_pb2.StepRequest(actions=codec.encode(f32(1, 8, 7))).SerializeToString()[:-3], ["actions", "truncated"]),
    (b"\x0a\xff", ["StepRequest", "varint"]),
    (b"\x0f", ["StepRequest", "not a valid message"]),
])
def test_bytes_that_are_no_message_raise_on_any_read(data, words):
    parsed = MessageCodec(world_model_pb2.StepRequest).parse(data)
    for read in (lambda: parsed.array("actions"), lambda: parsed.session_ids):
        with pytest.raises(codec.CodecError) as info:
            read()
        assert all(word in str(info.value) for word in words), info.value


def test_an_unsendable_dtype_or_a_field_that_is_no_tensor_fails_when_the_message_is_built():
    with pytest.raises(codec.CodecError, match="frames: dtype object"):
        WireMessage(policy_pb2.ActRequest(), frames=np.array([None]))
    with pytest.raises(ValueError, match="ActRequest.frame: not a Tensor field"):
        WireMessage(policy_pb2.ActRequest(), frame=u8(1, 8, 8, 3))


# ---- served: our server and clients against stock protobuf peers ----------------------------

def test_stock_clients_and_ours_get_identical_answers_from_our_servers():
    f, p, a = u8(2, 64, 64, 3), f32(2, 8), RNG.uniform(-1, 1, (2, 8, 7)).astype(np.float32)
    with serving("world-model") as server, WorldModelEndpoint(server.address) as ours:
        ids = ours.open(np.concatenate([f, f]), np.concatenate([p, p]), ["a", "b", "a", "b"])
        theirs = world_model_pb2_grpc.WorldModelStub(ours.channel).Step(
            world_model_pb2.StepRequest(session_ids=ids[2:], actions=codec.encode(a)))
        mine = ours.step(ids[:2], a)
    np.testing.assert_array_equal(mine.frames, codec.decode(theirs.frames))
    np.testing.assert_array_equal(mine.proprio, codec.decode(theirs.proprio))
    assert mine.steps == list(theirs.steps) == [1, 1]
    with serving("policy") as server, PolicyClient(server.address) as ours:
        mine = ours.act(f, p, ["a", "b"], seed=[5, 6])
        theirs = policy_pb2_grpc.PolicyStub(ours.channel).Act(policy_pb2.ActRequest(
            frames=codec.encode(f), proprio=codec.encode(p), instructions=["a", "b"], seeds=[5, 6]))
    for name in ("loc", "scale", "actions", "log_probs"):
        np.testing.assert_array_equal(getattr(mine, name), codec.decode(getattr(theirs, name)))
    assert mine.policy_version == theirs.policy_version == 1
    video = u8(2, 3, 64, 64, 3)
    with serving("reflector") as server, ReflectorClient(server.address) as ours:
        mine = ours.judge(video, ["a", "b"], eta=0.4)
        theirs = reflector_pb2_grpc.ReflectorStub(ours.channel).Judge(reflector_pb2.JudgeRequest(
            frames=codec.encode(video), instructions=["a", "b"], eta=0.4))
    np.testing.assert_array_equal(mine.p_done, codec.decode(theirs.p_done))
    assert mine.done == list(theirs.done) and mine.eta == theirs.eta
    with serving("reflector") as server, ReflectorClient(server.address) as ours:
        stub = reflector_pb2_grpc.ReflectorStub(ours.channel)
        mine = ours.open(np.concatenate([video[:, 0], video[:, 0]]), ["a", "b", "a", "b"])
        theirs = stub.Open(reflector_pb2.OpenVideosRequest(frames=codec.encode(video[:, 0]), instructions=["a", "b"]))
        for t in (1, 2):
            observed = ours.observe(mine[:2], video[:, t], eta=0.4)
            stock_observed = stub.Observe(reflector_pb2.ObserveRequest(session_ids=theirs.session_ids,
                                                                        frames=codec.encode(video[:, t]), eta=0.4))
            np.testing.assert_allclose(observed.p_done, codec.decode(stock_observed.p_done), rtol=0, atol=1e-6)
            assert observed.done == list(stock_observed.done)
            assert observed.lengths == list(stock_observed.lengths) == [t + 1] * 2
        judged = ours.judge(video, ["a", "b"])
        np.testing.assert_allclose(observed.p_done, judged.p_done, rtol=1e-5, atol=1e-6)
        assert stub.Close(reflector_pb2.CloseVideosRequest(session_ids=theirs.session_ids)).closed == 2
        assert ours.close_sessions(mine) == 4


class StockServicers(world_model_pb2_grpc.WorldModelServicer, policy_pb2_grpc.PolicyServicer,
                     reflector_pb2_grpc.ReflectorServicer):
    """A stock protobuf server of the three services: keeps each request, answers fixed arrays."""

    def __init__(self):
        self.requests, self.replies = [], {
            "Step": stock(*CASES["step reply"]), "Act": stock(*CASES["act reply"]),
            "Judge": stock(*CASES["judge reply"]), "Open": world_model_pb2.OpenResponse(session_ids=["s1", "s2"]),
            "OpenVideos": reflector_pb2.OpenVideosResponse(session_ids=["v1", "v2"]),
            "Observe": stock(*CASES["observe reply"]), "CloseVideos": reflector_pb2.CloseVideosResponse(closed=2)}

    def GetSpec(self, request, context):
        return tensor_pb2.ModelSpec(service="stock")

    def _answer(self, method, request):
        self.requests.append(request)
        return self.replies[method]

    def Open(self, request, context):  # WorldModel.Open and Reflector.Open
        return self._answer("OpenVideos" if isinstance(request, reflector_pb2.OpenVideosRequest) else "Open", request)

    def Observe(self, request, context):
        return self._answer("Observe", request)

    def Close(self, request, context):  # Reflector.Close (WorldModel.Close is not called here)
        return self._answer("CloseVideos", request)

    def Step(self, request, context):
        return self._answer("Step", request)

    def Act(self, request, context):
        return self._answer("Act", request)

    def Judge(self, request, context):
        return self._answer("Judge", request)


@pytest.fixture(scope="module")
def stock_server():
    servicers = StockServicers()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    for add in (world_model_pb2_grpc.add_WorldModelServicer_to_server, policy_pb2_grpc.add_PolicyServicer_to_server,
                reflector_pb2_grpc.add_ReflectorServicer_to_server):
        add(servicers, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicers, f"127.0.0.1:{port}"
    server.stop(None)


def test_our_clients_against_a_stock_protobuf_server(stock_server):
    servicers, address = stock_server
    f, p, a = u8(2, 8, 8, 3), f32(2, 8), f32(2, 8, 7).astype(">f4")
    with WorldModelEndpoint(address) as client:
        assert client.open(f, p, ["a", "b"]) == ["s1", "s2"]
        step = client.step(["s1", "s2"], a)
    assert servicers.requests[-2] == stock(world_model_pb2.OpenRequest, {"instructions": ["a", "b"]},
                                           {"frames": f, "proprio": p})
    assert servicers.requests[-1] == stock(world_model_pb2.StepRequest, {"session_ids": ["s1", "s2"]}, {"actions": a})
    _, fields, arrays = CASES["step reply"]
    np.testing.assert_array_equal(step.frames, arrays["frames"])
    np.testing.assert_array_equal(step.proprio, arrays["proprio"])
    assert step.steps == fields["steps"] and step.timing.batch_size == 3 and step.timing.compute_ms == 1.25
    with PolicyClient(address) as client:
        act = client.act(f, p, ["a", "b"], deterministic=True, seed=[1, 2])
    assert servicers.requests[-1] == stock(policy_pb2.ActRequest, {"instructions": ["a", "b"], "deterministic": True,
                                                                   "seeds": [1, 2]}, {"frames": f, "proprio": p})
    _, fields, arrays = CASES["act reply"]
    for name, arr in arrays.items():
        np.testing.assert_array_equal(getattr(act, name), arr)
    assert act.policy_version == 7
    with ReflectorClient(address) as client:
        judge = client.judge(u8(2, 2, 8, 8, 3), ["a", "b"], eta=0.25)
    assert servicers.requests[-1].eta == 0.25 and codec.decode(servicers.requests[-1].frames).shape == (2, 2, 8, 8, 3)
    assert judge.done == [True, False] and judge.p_done.tolist() == pytest.approx([0.7, 0.2])
    video = u8(2, 3, 8, 8, 3)
    with ReflectorClient(address) as client:
        ids = client.open(video[:, 0], ["a", "b"])
        observed = client.observe(ids, video[:, 1], eta=0.3)
        assert client.close_sessions(ids) == 2
    assert ids == ["v1", "v2"]
    assert servicers.requests[-3] == stock(reflector_pb2.OpenVideosRequest, {"instructions": ["a", "b"]},
                                           {"frames": video[:, 0]})
    assert servicers.requests[-2] == stock(reflector_pb2.ObserveRequest, {"session_ids": ids, "eta": 0.3},
                                           {"frames": video[:, 1]})
    assert servicers.requests[-1] == reflector_pb2.CloseVideosRequest(session_ids=ids)
    _, fields, arrays = CASES["observe reply"]
    np.testing.assert_array_equal(observed.p_done, arrays["p_done"])
    assert observed.done == fields["done"] and observed.lengths == fields["lengths"] and observed.eta == 0.5


def test_a_reply_without_its_tensors_is_a_service_error(stock_server):
    servicers, address = stock_server
    servicers.replies["Judge"] = reflector_pb2.JudgeResponse(done=[True])
    with ReflectorClient(address) as client, pytest.raises(ServiceError) as info:
        client.judge(u8(1, 1, 8, 8, 3), ["a"])
    assert info.value.code == grpc.StatusCode.INTERNAL and "p_done missing" in info.value.details


@pytest.mark.parametrize("method, data, words", [
    ("Act", policy_pb2.ActRequest(frames=tensor_pb2.Tensor(dtype=tensor_pb2.UINT8, shape=[1, 64, 64, 3], data=b"\0"),
                                  proprio=codec.encode(f32(1, 8))).SerializeToString(), ["frames.data", "1 bytes"]),
    ("Act", policy_pb2.ActRequest(frames=codec.encode(u8(1, 64, 64, 3))).SerializeToString()[:-100],
     ["frames", "truncated"]),
    ("Act", b"\x0a\x85", ["ActRequest", "varint"]),
])
def test_bad_bytes_are_invalid_argument_naming_the_field(method, data, words):
    with serving("policy") as server, grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary(f"/worldenv.v1.Policy/{method}")  # raw bytes, no serializer
        with pytest.raises(grpc.RpcError) as info:
            call(data, timeout=30)
    assert info.value.code() == INVALID, info.value.details()
    assert all(word in info.value.details() for word in words), info.value.details()


def test_bad_observe_frames_are_invalid_argument_naming_the_field():
    frames = tensor_pb2.Tensor(dtype=tensor_pb2.UINT8, shape=[1, 64, 64, 3], data=b"\0" * 5)
    data = reflector_pb2.ObserveRequest(session_ids=["s"], frames=frames).SerializeToString()
    with serving("reflector") as server, grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/worldenv.v1.Reflector/Observe")(data, timeout=30)  # raw bytes
    assert info.value.code() == INVALID and "frames.data" in info.value.details(), info.value.details()
