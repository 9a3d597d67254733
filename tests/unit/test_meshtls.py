"""Certificate identities: whole in an ``algomesh:`` URI name (the common name holds only 64
characters), read by a sidecar without cryptography (meshtls.identity_of)."""
import pytest
from cryptography import x509

from algomesh.sidecar.meshtls import CONTROL_PLANE, URI_SCHEME, MeshCA, identity_of

LONG = "o" * 64 + "/" + "n" * 64 + "@1.0.0-rc.1+build.7"  # the longest names an owner and algorithm may have


@pytest.mark.parametrize("identity", ["demo/clean@1.0.0", CONTROL_PLANE, "a/b@0.0.1-rc.1+build.7",
                                      "x" * 50 + "/y@1.2.3", LONG])
def test_the_identity_read_from_the_bytes_is_cryptographys(identity):
    creds = MeshCA().issue(identity)
    cert = x509.load_pem_x509_certificate(creds.cert)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == [URI_SCHEME + identity]
    assert identity_of(creds.cert) == creds.identity == identity


def test_garbage_and_the_ca_itself_are_refused():
    for bad in (b"", b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----", b"hello", MeshCA().ca_pem):
        with pytest.raises(ValueError):
            identity_of(bad)
