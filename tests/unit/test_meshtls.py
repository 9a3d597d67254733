"""The sidecar reads its certificate's name without cryptography (meshtls.common_name)."""
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from algomesh.sidecar.meshtls import CONTROL_PLANE, MeshCA, common_name


@pytest.mark.parametrize("identity", ["demo/clean@1.0.0", CONTROL_PLANE, "a/b@0.0.1-rc.1+build.7",
                                      "x" * 50 + "/y@1.2.3", "ünïcode/ñame@1.0.0"])
def test_the_name_read_from_the_bytes_is_cryptographys(identity):
    creds = MeshCA().issue(identity)
    cert = x509.load_pem_x509_certificate(creds.cert)
    assert common_name(creds.cert) == cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity
    assert creds.identity == identity
    assert common_name(creds.ca) == "algomesh mesh CA"


def test_garbage_is_refused():
    for bad in (b"", b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----", b"hello"):
        with pytest.raises(ValueError):
            common_name(bad)
