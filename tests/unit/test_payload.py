import pytest

import algomesh
from algomesh._payload import BINARY, JSON, TEXT, decode, encode
from algomesh.v1 import payload_pb2


@pytest.mark.parametrize("value, ct", [
    ("héllo ✓", TEXT), (b"\x00\xff", BINARY), ({"a": [1, 2.5, None, True]}, JSON),
    ([1, "x"], JSON), (3, JSON), (None, JSON), ("", TEXT), (b"", BINARY),
])
def test_values_map_as_algorithmia_does_and_back(value, ct):
    p = encode(value)
    assert p.content_type == ct
    assert decode(p) == value


def test_bytearray_is_binary():
    assert encode(bytearray(b"ab")).content_type == BINARY


def test_unencodable_value_is_invalid_input():
    with pytest.raises(algomesh.InvalidError) as e:
        encode({1, 2})
    assert e.value.reason == "INVALID_INPUT"


@pytest.mark.parametrize("payload, fragment", [
    (payload_pb2.Payload(content_type=JSON, data=b"{bad"), "not valid JSON"),
    (payload_pb2.Payload(content_type=TEXT, data=b"\xff\xfe"), "not UTF-8"),
    (payload_pb2.Payload(content_type=0, data=b"x"), "unsupported content type"),
])
def test_malformed_payloads_are_invalid_input(payload, fragment):
    with pytest.raises(algomesh.InvalidError) as e:
        decode(payload)
    assert fragment in e.value.message


def test_explicit_payload_passes_untouched():
    p = encode(algomesh.Payload(b'{"x": 1}', "json"))
    assert p.content_type == JSON and p.data == b'{"x": 1}'
    with pytest.raises(ValueError):
        encode(algomesh.Payload(b"x", "yaml"))
