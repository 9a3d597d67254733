"""Identity the mesh vouches for: each instance's certificate, its rotation, and what an
algorithm can and cannot get at. (Who may call whom with which certificate: the security
matrix, tests/security/test_matrix.py.)"""
import datetime
import os
import socket
import ssl
import time

from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.conftest import start_mesh, write_algorithm

SNOOP = """\
import os, pathlib

def apply(x):
    seen = {"env": sorted(k for k in os.environ if "KEY" in k or "TOKEN" in k)}
    # the sidecar is the parent: its environment and open files
    parent = pathlib.Path(f"/proc/{os.getppid()}")
    seen["parent_env_has_key"] = b"-----BEGIN " + b"PRIVATE KEY-----" in (parent / "environ").read_bytes()
    try:
        seen["stdin"] = os.read(0, 100).decode(errors="replace")
    except OSError as exc:
        seen["stdin"] = type(exc).__name__
    return seen
"""


def _served_certificate(mesh, address: str, tmp_path) -> x509.Certificate:
    """The certificate a sidecar presents, read with a client certificate of this mesh."""
    with mesh.client() as c:
        pems = c.issue_certificate("ops/inspect@0")
    for name, pem in (("ca.pem", pems.ca), ("cert.pem", pems.cert), ("key.pem", pems.key)):
        (tmp_path / name).write_text(pem)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    ctx.load_cert_chain(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    ctx.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="mesh.algomesh") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def test_each_instance_has_a_short_lived_certificate_naming_it_and_is_replaced_before_expiry(tmp_path):
    lifetime = 0.005 * 3600  # 18 s: replaced after 12 s
    mesh = start_mesh(tmp_path / "mesh", "--cert-hours", "0.005")
    try:
        mesh.publish(write_algorithm(tmp_path / "echo", "id/echo", "1.2.0", "def apply(x):\n    return x\n"))
        with mesh.client() as c:
            assert c.algo("id/echo").pipe("one").result == "one"
            [first] = c.instances("id/echo")
            cert = _served_certificate(mesh, first.address, tmp_path)
            assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "id/echo@1.2.0"
            left = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
            assert datetime.timedelta(0) < left <= datetime.timedelta(seconds=lifetime)

            # Within its lifetime a successor takes over, and calls never stop being answered.
            deadline, answers = time.monotonic() + 60, 0
            while time.monotonic() < deadline:
                assert c.algo("id/echo").pipe(f"call {answers}").result == f"call {answers}"
                answers += 1
                ids = [i.id for i in c.instances("id/echo")]
                if ids and first.id not in ids:
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"instance {first.id} was not replaced within 60 s")
            assert "rotating instance " + first.id in mesh.output
            # past the first certificate's expiry, the mesh still answers
            time.sleep(max(0.0, left.total_seconds()) + 1)
            assert c.algo("id/echo").pipe("after").result == "after"
    finally:
        mesh.stop()


def test_an_algorithm_never_sees_keys_or_certificates(tmp_path, monkeypatch):
    monkeypatch.setenv("ALGOMESH_API_KEY", "amk_0000000000000000_the-operators-own-key-must-not-leak-0000")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "consul-secret")
    mesh = start_mesh(tmp_path / "mesh")
    try:
        mesh.publish(write_algorithm(tmp_path / "snoop", "id/snoop", "1.0.0", SNOOP))
        with mesh.client() as c:
            seen = c.algo("id/snoop").pipe(None).result
        assert seen["env"] == []                       # no API key or token in its environment
        assert seen["parent_env_has_key"] is False     # nor in its sidecar's
        assert seen["stdin"] == ""                     # its stdin is empty: the sidecar's key came on the sidecar's own
        # No private key on disk anywhere under the data dir (the CA's key lives in memory).
        for root, _dirs, files in os.walk(mesh.data_dir):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    assert b"-----BEGIN PRIVATE KEY-----" not in f.read(), path
        # The admin key was printed once, and appears nowhere in the logs.
        logs = "".join(p.read_text(errors="replace") for p in (mesh.data_dir / "logs").glob("*.log"))
        assert mesh.api_key not in logs and mesh.api_key not in mesh.output.replace(mesh.banner, "")
    finally:
        mesh.stop()


def test_the_longest_names_get_certificates_and_pipe(mesh, tmp_path):
    """owner/name@version may pass the 64 characters a certificate's common name holds: the
    identity travels whole as the certificate's algomesh: URI name (it used to fail the
    instance's start with INTERNAL)."""
    callee, caller = "o" * 64 + "/" + "n" * 64, "o" * 64 + "/" + "c" * 64
    mesh.publish(write_algorithm(tmp_path / "callee", callee, "1.0.0", "def apply(x):\n    return x\n"))
    mesh.publish(write_algorithm(tmp_path / "caller", caller, "1.0.0",
                                 f"import algomesh\ndef apply(x):\n    return algomesh.client().algo({callee!r}).pipe(x).result\n",
                                 extra_toml=f'[permissions]\ncan_call = ["{callee}"]\n'))
    with mesh.client() as c:
        assert c.algo(caller).pipe("through").result == "through"  # the callee proved who called it
