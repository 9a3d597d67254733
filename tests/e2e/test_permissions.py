"""Algorithm permissions from the manifest, enforced on the way out and again on the way in."""
import grpc
import pytest

import algomesh
from algomesh._errors import from_rpc_error
from algomesh.v1 import payload_pb2
from tests.conftest import write_algorithm

PIPE = "import algomesh\ndef apply(x):\n    return algomesh.client().algo(x).pipe('hi').result\n"
ECHO = "def apply(x):\n    return x\n"


@pytest.fixture(scope="module", autouse=True)
def published(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("perm")
    mesh.publish(write_algorithm(d / "target", "perm/target", "1.0.0", ECHO))
    mesh.publish(write_algorithm(d / "other", "perm/other", "1.0.0", ECHO))
    mesh.publish(write_algorithm(d / "secret", "perm/secret", "1.0.0", ECHO,
                                 extra_toml='[permissions]\ncallability = "private"\n'))
    mesh.publish(write_algorithm(d / "none", "perm/none", "1.0.0", PIPE))                    # may call nothing
    mesh.publish(write_algorithm(d / "one", "perm/one", "1.0.0", PIPE,
                                 extra_toml='[permissions]\ncan_call = ["perm/target"]\n'))
    mesh.publish(write_algorithm(d / "glob", "perm/glob", "1.0.0", PIPE,
                                 extra_toml='[permissions]\ncan_call = ["perm/*"]\n'))
    mesh.publish(write_algorithm(d / "stranger", "else/stranger", "1.0.0", PIPE,
                                 extra_toml='[permissions]\ncan_call = ["*"]\n'))


def _denied(fn) -> algomesh.AlgomeshError:
    with pytest.raises(algomesh.PermissionError_) as e:
        fn()
    assert e.value.reason == "PERMISSION_DENIED"
    return e.value


def test_nothing_may_be_called_by_default(client):
    e = _denied(lambda: client.algo("perm/none").pipe("perm/target").result)
    assert "perm/none may not pipe to perm/target" in e.message and e.metadata["permission"] == "can_call:perm/target"


def test_can_call_names_and_globs(client):
    assert client.algo("perm/one").pipe("perm/target").result == "hi"
    _denied(lambda: client.algo("perm/one").pipe("perm/other").result)
    assert client.algo("perm/glob").pipe("perm/other").result == "hi"


def test_a_private_algorithm_answers_only_its_owners_algorithms(client):
    assert client.algo("perm/glob").pipe("perm/secret").result == "hi"        # same owner
    e = _denied(lambda: client.algo("else/stranger").pipe("perm/secret").result)
    assert "private to perm" in e.message
    _denied(lambda: client.algo("perm/secret").pipe("hi").result)             # the admin's key: not perm's


def test_the_callee_believes_only_the_mesh_certificate(mesh, client):
    client.algo("perm/target").pipe("warm").result
    [instance] = client.instances("perm/target")
    request = payload_pb2.CallRequest(input=payload_pb2.Payload(content_type=payload_pb2.CONTENT_TYPE_TEXT,
                                                                data=b"hi")).SerializeToString()
    claim = (("algomesh-target", "perm/target/1.0.0"), ("algomesh-caller", "perm/one@1.0.0"))
    # Skipping the sidecars: a plain connection never gets past the TLS handshake.
    with grpc.insecure_channel(instance.address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/algomesh.v1.Mesh/Call")(request, metadata=claim, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # A mesh certificate naming perm/none, claiming to be perm/one (which may call perm/target):
    # the certificate wins, and perm/none may call nothing.
    with mesh.mesh_channel(instance.address, "perm/none@1.0.0") as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/algomesh.v1.Mesh/Call")(request, metadata=claim, timeout=10)
        err = from_rpc_error(e.value)
        assert err.reason == "PERMISSION_DENIED" and "perm/none@1.0.0 may not call perm/target" in err.message
    with mesh.mesh_channel(instance.address, "ghost/unknown@9.9.9") as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/algomesh.v1.Mesh/Call")(request, metadata=claim, timeout=10)
        assert from_rpc_error(e.value).reason == "PERMISSION_DENIED"
    # The one the certificate names, when it may: answered.
    with mesh.mesh_channel(instance.address, "perm/one@1.0.0") as ch:
        body = ch.unary_unary("/algomesh.v1.Mesh/Call")(request, metadata=claim[:1], timeout=10)
        assert payload_pb2.CallResponse.FromString(body).output.data == b"hi"


def test_a_client_cannot_inject_pipeline_facts_at_the_ingress(mesh, client):
    # Path, caller and call token are facts sidecars vouch for to each other; a client that
    # sends them to the ingress is ignored. (Had the fake path been believed, perm/one's
    # pipe to perm/target would be refused as a cycle, and the claimed caller checked.)
    request = payload_pb2.CallRequest(input=payload_pb2.Payload(content_type=payload_pb2.CONTENT_TYPE_TEXT,
                                                                data=b"perm/target")).SerializeToString()
    reply_body = None
    with grpc.insecure_channel(mesh.address) as ch:
        reply_body = ch.unary_unary("/algomesh.v1.Mesh/Call")(
            request, timeout=30, metadata=(("algomesh-target", "perm/one"),
                                           ("algomesh-path", "perm/target@1.0.0,perm/none@1.0.0"),
                                           ("algomesh-caller", "perm/none@1.0.0"),
                                           ("algomesh-call", "forged-token")) + mesh.auth)
    out = payload_pb2.CallResponse.FromString(reply_body)
    assert out.output.data == b"hi"
