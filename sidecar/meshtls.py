"""Identity the mesh vouches for: mutual TLS between sidecars, with a mesh CA.

``algomesh up`` creates the mesh CA when it starts. The CA's key lives only in the
control plane's memory (never on disk, where an algorithm running as the same user could
read it); a restart makes a new CA, and its instances start afresh with it. Each instance
gets its own short-lived certificate whose common name is its algorithm and version
(``owner/name@1.2.3``), valid for a day by default (``algomesh up --cert-hours``); the
launcher replaces an instance at two thirds of that, starting its successor first. The
control plane's own certificate says ``algomesh:control-plane``.
The instance's key reaches its sidecar through a pipe, never through a file, and the
runner never sees it.

Every mesh connection — sidecar to sidecar, ingress to sidecar, sidecar to the control
plane's mesh port — is TLS 1.3 with a certificate on both ends, checked against the CA;
a peer without one is refused in the handshake. A server believes who is calling only
from the certificate: ``peer_identity`` reads it. All certificates also name one DNS
name, ``mesh.algomesh``, which clients verify the server against, so instances can move
between addresses without new certificates.

``MeshTransport`` is the one place that knows whether the mesh is secure: it opens
channels and ports either way (``--insecure``: plain TCP, identities taken on trust).
"""
from __future__ import annotations

import base64
import datetime
import json
import re
from dataclasses import dataclass
from typing import Sequence

import grpc

# cryptography (about 9 MiB of memory once imported) is needed only to make certificates,
# in the control plane: a sidecar reads the one name it needs from its certificate itself.

SERVER_NAME = "mesh.algomesh"
CONTROL_PLANE = "algomesh:control-plane"
DEFAULT_LIFETIME = 24 * 3600.0  # seconds an instance certificate is valid
CA_LIFETIME = 3650 * 86400.0
_SKEW = datetime.timedelta(minutes=5)  # clocks differ a little between hosts


@dataclass(frozen=True)
class MeshCredentials:
    """One party's key and certificate, and the CA that vouches for its peers (PEM)."""
    ca: bytes
    cert: bytes
    key: bytes

    def to_bytes(self) -> bytes:
        return json.dumps({k: getattr(self, k).decode() for k in ("ca", "cert", "key")}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "MeshCredentials":
        d = json.loads(data)
        return cls(d["ca"].encode(), d["cert"].encode(), d["key"].encode())

    @property
    def identity(self) -> str:
        return identity_of(self.cert)

    @property
    def not_after(self) -> float:
        from cryptography import x509
        return x509.load_pem_x509_certificate(self.cert).not_valid_after_utc.timestamp()


class MeshCA:
    def __init__(self, lifetime: float = DEFAULT_LIFETIME) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        self.lifetime = lifetime
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "algomesh mesh CA")])
        self._cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(now + datetime.timedelta(seconds=CA_LIFETIME))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256()))
        self.ca_pem = self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, identity: str, lifetime: float | None = None) -> MeshCredentials:
        """A new key and a certificate naming ``identity`` (``owner/name@version``)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(
                NameOID.COMMON_NAME, identity if len(identity) <= 64 else identity[:61] + "...")]))
            .issuer_name(self._cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + datetime.timedelta(seconds=lifetime or self.lifetime))
            # The identity, whole, as a URI (owner/name@version may pass the 64 characters a
            # common name may have); the common name is the same, cut to fit, for people.
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME),
                                                        x509.UniformResourceIdentifier(URI_SCHEME + identity)]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256()))
        return MeshCredentials(
            ca=self.ca_pem, cert=cert.public_bytes(serialization.Encoding.PEM),
            key=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


URI_SCHEME = "algomesh:"  # a certificate's identity: the URI name algomesh:owner/name@version
_SCHEME_BYTES = URI_SCHEME.encode()
# a URI name (GeneralName [6], IA5String) that starts with our scheme; its length in short or long form
_URI = re.compile(rb"\x86(?:([\x00-\x7f])|\x81([\x80-\xff]))" + re.escape(URI_SCHEME.encode()))


def identity_of(pem: bytes) -> str:
    """The identity on a PEM certificate of ours (its ``algomesh:`` URI name), read from its
    DER bytes, without cryptography. Anything else is refused (ValueError)."""
    try:
        body = b"".join(line for line in pem.strip().splitlines() if not line.startswith(b"-----"))
        der = base64.b64decode(body, validate=True)
    except (ValueError, TypeError):
        raise ValueError("not a PEM certificate") from None
    m = _URI.search(der)
    if m is None:
        raise ValueError("the certificate names no algomesh identity")
    length = (m.group(1) or m.group(2))[0]
    start = m.start() + (2 if m.group(1) else 3)
    return der[start:start + length].decode("ascii")[len(URI_SCHEME):]


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The identity on the calling peer's verified certificate (its ``algomesh:`` URI name);
    None on a plain connection."""
    # The subject alternative names (grpc's peer identities on a TLS connection): a tenth of
    # the cost of the whole auth context, which copies the PEM certificate out every call.
    # Only the mesh CA signs a peer's certificate, and it writes the URI name alone in our scheme.
    for name in context.peer_identities() or ():
        if name.startswith(_SCHEME_BYTES):
            return name[len(_SCHEME_BYTES):].decode()
    return None


class MeshTransport:
    """Channels and ports between mesh parties: mTLS with ``creds``, plain without."""

    def __init__(self, creds: MeshCredentials | None) -> None:
        self.creds = creds
        if creds is not None:
            self._channel_creds = grpc.ssl_channel_credentials(
                root_certificates=creds.ca, private_key=creds.key, certificate_chain=creds.cert)
            self._server_creds = grpc.ssl_server_credentials(
                [(creds.key, creds.cert)], root_certificates=creds.ca, require_client_auth=True)

    @property
    def secure(self) -> bool:
        return self.creds is not None

    def span_sender(self, address: str):
        """Batches of spans to a mesh party (the control plane's collector): a blocking
        channel, for the span batch thread (span_export.py)."""
        from .span_export import MeshSender

        if self.creds is None:
            return MeshSender(grpc.insecure_channel(address))
        return MeshSender(grpc.secure_channel(address, self._channel_creds,
                                              options=(("grpc.ssl_target_name_override", SERVER_NAME),)))

    def channel(self, address: str, options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
        if self.creds is None:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(address, self._channel_creds,
                                       options=(*options, ("grpc.ssl_target_name_override", SERVER_NAME)))

    def listen(self, server: grpc.aio.Server, address: str) -> int:
        if self.creds is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self._server_creds)

    def listen_clients(self, server: grpc.aio.Server, address: str) -> int:
        """A port for clients (API keys, no mesh certificate): TLS with this party's mesh
        certificate, which clients check against the mesh CA (LocateResponse.mesh_ca)."""
        if self.creds is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, grpc.ssl_server_credentials(
            [(self.creds.key, self.creds.cert)], require_client_auth=False))

    def identify(self, context: grpc.aio.ServicerContext) -> str | None:
        """Who the peer is, as its certificate says; None when the mesh is not secure."""
        return peer_identity(context) if self.creds is not None else None
