"""The security matrix: who calls what, with which key or identity -> which status and reason.

One mesh (``algomesh up``, module-scoped) with a few algorithms of two owners, ``mx`` and
``other``; API keys made once; mesh certificates issued once. Then ONE table, ``ROWS``:
each row names a principal (``who``), an action, a target and what must happen, and is
one test. ``who`` is

    an API key      admin, ops-admin (an admin key an admin made), mx, other, mx-pub (owner
                    mx, may call only ``mx/pub*``), mx-nopipe (owner mx, ``--no-pipelines``),
                    revoked, forged (well-formed, unknown id), mx-wrong-secret (mx's id,
                    another secret), garbage (not a key at all), none (no header);
    a certificate   cert:IDENTITY (issued by this mesh's CA through the admin-only
                    IssueCertificate), foreign-ca (a look-alike from a CA of our own making),
                    expired (issued for one second), plain (no TLS at all).

Actions: ``call`` (Mesh/Call at the ingress; a target ``a>b>c`` calls mx/relay-like
algorithms that pipe along the chain), the Registry RPCs on the public port (by name), the
same on the mesh port (``mesh-*``), ``inbound`` (Mesh/Call straight to an instance's
sidecar), and a few composites (revoke-then-call, call-big, call-while-busy, insecure-*).

An expectation is ``Ok`` (optionally the value) or ``Err(code, reason, permission)``; a
reason of None means "refused by gRPC itself, no ErrorInfo" (the TLS handshake). Every
error is also checked for the secrets of every key this module ever made: none may leak.

Bugs this matrix found, now fixed (their rows stay):
  * a ``--no-pipelines`` key did not stop pipes that carry no call token (an algorithm
    piping from a worker thread); such a pipe is now held to the strictest call running;
  * an admin could not Scale a private version (it was resolved as owner "admin");
  * on the mesh port a certificate naming ``mx/<anything>@<v>`` acted as owner mx for
    every Registry RPC (revoking mx's keys, publishing mx's algorithms); the mesh port now
    serves only what sidecars use (Locate, Resolve, Watch, Register/DeregisterInstance).
"""
from __future__ import annotations

import datetime
import os
import re
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.rpc import error_details_pb2, status_pb2

import algomesh
from algomesh import _wire
from algomesh._archive import pack
from algomesh._errors import DOMAIN, REASONS, STATUS_DETAILS_KEY
from algomesh._payload import decode, encode
from algomesh.v1 import payload_pb2, registry_pb2, registry_pb2_grpc
from tests.conftest import alive, descendants, start_mesh, write_algorithm

C = grpc.StatusCode
TIMEOUT = 30.0

# --- the algorithms ----------------------------------------------------------------------

ECHO = "def apply(x):\n    return x\n"
WHOAMI = "def apply(x):\n    return '{name} {version}'\n"
# {"to": [hops...], "v": value}: pipe along the hops; the last hop gets the bare value.
RELAY = """\
import algomesh
def apply(x):
    hops = x["to"]
    nxt = x["v"] if len(hops) == 1 else {"to": hops[1:], "v": x["v"]}
    return algomesh.client().algo(hops[0]).pipe(nxt).result
"""
# The same, but the pipe is made from a worker thread (which does not inherit the call's context).
THREADED = """\
import algomesh
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(2)
def apply(x):
    hops = x["to"]
    nxt = x["v"] if len(hops) == 1 else {"to": hops[1:], "v": x["v"]}
    return pool.submit(lambda: algomesh.client().algo(hops[0]).pipe(nxt).result).result()
"""
SLEEPY = "import time\ndef apply(x):\n    time.sleep(x)\n    return x\n"
RELAYS = ("mx/relay", "other/relay", "mx/threaded")  # targets whose input is a hop list


# --- expectations and rows ---------------------------------------------------------------

@dataclass(frozen=True)
class Ok:
    want: Any = None          # the expected value (==), a predicate, or None: anything
    label: str = ""           # how a predicate reads in the test id

    def check(self, got: Any) -> None:
        if callable(self.want):
            assert self.want(got), f"unexpected value {got!r} ({self.label})"
        elif self.want is not None:
            assert got == self.want

    def __str__(self) -> str:
        if self.label:
            return f"ok {self.label}"
        return "ok" if self.want is None else f"ok {self.want!r}"


@dataclass(frozen=True)
class Err:
    code: grpc.StatusCode
    reason: str | None              # None: refused by gRPC itself (TLS handshake), no ErrorInfo
    permission: str | None = None   # ErrorInfo metadata "permission", when the reason names one

    def __str__(self) -> str:
        if self.reason is None:
            return f"{self.code.name} (handshake)"
        what = self.permission or ("" if self.reason == self.code.name else self.reason)
        return f"{self.code.name} {what}".rstrip()


def denied(permission: str) -> Err:
    return Err(C.PERMISSION_DENIED, "PERMISSION_DENIED", permission)


UNAUTH = Err(C.UNAUTHENTICATED, "UNAUTHENTICATED")
HANDSHAKE = Err(C.UNAVAILABLE, None)
NO_ALGORITHM = Err(C.NOT_FOUND, "ALGORITHM_NOT_FOUND")
NO_VERSION = Err(C.NOT_FOUND, "VERSION_NOT_FOUND")
NO_KEY = Err(C.NOT_FOUND, "KEY_NOT_FOUND")
INVALID = Err(C.INVALID_ARGUMENT, "INVALID_INPUT")


@dataclass(frozen=True)
class Row:
    who: str
    action: str
    target: str
    expect: Ok | Err
    arg: Any = None       # action-specific: a requester, a claimed header...
    xfail: str = ""       # a known product bug (strict)

    @property
    def id(self) -> str:
        extra = f"({self.arg})" if isinstance(self.arg, str) and self.arg else ""
        return f"{self.who}|{self.action}{extra}|{self.target or '-'} -> {self.expect}"


def _owners_are(*owners: str) -> Ok:
    return Ok(lambda got: set(got) == set(owners), f"only {'+'.join(owners)}'s keys")


# Public-port Registry RPCs and Mesh/Call: a missing, forged, mutated, revoked or junk key
# is UNAUTHENTICATED on every one of them.
PUBLIC = ("call", "publish", "resolve", "list-algorithms", "list-versions", "list-instances", "locate",
          "scale", "create-key", "list-keys", "revoke-key", "issue-cert", "register-instance",
          "deregister-instance", "watch")
_TARGETS = {"call": "mx/echo", "publish": "mx/owned", "resolve": "mx/echo", "list-versions": "mx/echo",
            "list-instances": "mx/echo", "locate": "mx/echo", "scale": "mx/echo", "create-key": "mx",
            "list-keys": "", "revoke-key": "mx", "issue-cert": "ops/debug@0",
            "register-instance": "mx/phantom@1.0.0", "deregister-instance": "no-such-instance",
            "list-algorithms": "", "watch": ""}

ROWS: list[Row] = [
    # --- 1. API keys: authentication ----------------------------------------------------
    *[Row(who, action, _TARGETS[action], UNAUTH) for who in ("none", "forged", "revoked") for action in PUBLIC],
    *[Row(who, action, _TARGETS[action], UNAUTH) for who in ("mx-wrong-secret", "garbage")
      for action in ("call", "list-algorithms", "publish", "revoke-key")],
    Row("mx", "call", "mx/echo", Ok("hi")),
    Row("admin", "call", "mx/echo", Ok("hi")),
    # revocation is effective once RevokeKey returns (the key worked just before)
    Row("mx", "revoke-then-call", "mx", UNAUTH),
    Row("admin", "revoke-then-call", "other", UNAUTH),
    Row("other", "revoke-then-call", "mx", NO_KEY),      # another owner's key: "no such key"
    Row("mx-pub", "revoke-key", "other", NO_KEY),
    Row("admin", "revoke-key", "0123456789abcdef", NO_KEY),
    # --- API keys: algorithm globs ------------------------------------------------------
    Row("mx-pub", "call", "mx/pubecho", Ok("hi")),
    Row("mx-pub", "call", "mx/echo", denied("key:algorithms:mx/echo")),
    Row("mx-pub", "call", "other/echo", denied("key:algorithms:other/echo")),
    Row("mx-pub", "resolve", "mx/echo", denied("key:algorithms:mx/echo")),
    Row("mx-pub", "list-versions", "mx/echo", denied("key:algorithms:mx/echo")),
    Row("mx-pub", "locate", "mx/echo", denied("key:algorithms:mx/echo")),
    Row("mx-pub", "list-algorithms", "", Ok(["mx/pubecho"])),
    Row("mx-pub", "list-instances", "mx/echo", Ok([])),
    Row("mx-pub", "list-instances", "mx/pubecho", Ok(["mx/pubecho"])),
    # --- API keys: no pipelines ---------------------------------------------------------
    Row("mx-nopipe", "call", "mx/echo", Ok("hi")),
    Row("mx-nopipe", "call", "mx/relay>mx/echo", denied("key:pipelines")),
    Row("mx", "call", "mx/relay>mx/echo", Ok("hi")),
    Row("mx", "call", "mx/threaded>mx/echo", Ok("hi")),
    Row("mx-nopipe", "call", "mx/threaded>mx/echo", denied("key:pipelines")),
    # --- API keys: admin-only RPCs ------------------------------------------------------
    Row("mx", "create-key", "mx", denied("admin")),
    Row("other", "create-key", "other", denied("admin")),
    Row("mx-pub", "create-key", "mx", denied("admin")),
    Row("admin", "create-key", "mx", Ok("mx")),
    Row("ops-admin", "create-key", "ops", Ok("ops")),
    Row("mx", "issue-cert", "mx/relay@1.0.0", denied("admin")),
    Row("other", "issue-cert", "ops/debug@0", denied("admin")),
    Row("admin", "issue-cert", "ops/debug@0", Ok("ops/debug@0")),
    Row("admin", "issue-cert", "algomesh:control-plane", INVALID),
    Row("admin", "issue-cert", " algomesh:control-plane\t", INVALID),
    # --- API keys: owners -----------------------------------------------------------------
    Row("mx", "publish", "mx/owned", Ok(True)),
    Row("admin", "publish", "mx/owned", Ok(True)),
    Row("other", "publish", "other/owned", Ok(True)),
    Row("other", "publish", "mx/owned", denied("owner:mx")),
    Row("mx", "publish", "other/owned", denied("owner:other")),
    Row("mx", "scale", "mx/echo", Ok("1.0.0")),
    Row("admin", "scale", "mx/echo", Ok("1.0.0")),
    Row("other", "scale", "mx/echo", denied("owner:mx")),
    Row("mx-pub", "scale", "other/relay", denied("owner:other")),
    Row("admin", "scale", "mx/secret", Ok("1.0.0")),
    Row("other", "list-keys", "", _owners_are("other")),
    Row("other", "list-keys", "mx", _owners_are("other")),   # the owner filter is an admin's
    Row("mx", "list-keys", "", _owners_are("mx")),
    Row("admin", "list-keys", "mx", _owners_are("mx")),
    Row("admin", "list-keys", "", Ok(lambda got: {"admin", "ops", "mx", "other"} <= set(got), "every owner's")),
    # --- API keys: public-port mesh RPCs need an admin ---------------------------------
    Row("mx", "register-instance", "mx/phantom@1.0.0", denied("admin")),
    Row("mx", "deregister-instance", "mx/echo", denied("admin")),
    Row("mx", "watch", "", denied("admin")),
    Row("admin", "register-instance", "mx/phantom@1.0.0", Ok()),
    Row("admin", "deregister-instance", "no-such-instance", Ok()),
    Row("admin", "watch", "", Ok()),
    # --- API keys: private versions -------------------------------------------------------
    Row("mx", "call", "mx/secret", Ok("mx/secret 1.0.0")),
    Row("other", "call", "mx/secret", NO_ALGORITHM),
    Row("admin", "call", "mx/secret", NO_ALGORITHM),                # the admin key is not mx
    Row("mx", "call", "mx/mixed", Ok("mx/mixed 2.0.0")),
    Row("other", "call", "mx/mixed", Ok("mx/mixed 1.0.0")),
    Row("other", "call", "mx/mixed/2.0.0", NO_VERSION),
    Row("other", "resolve", "mx/secret", NO_ALGORITHM),
    Row("other", "resolve", "mx/secret", NO_ALGORITHM, arg="mx"),   # asking as mx: an admin's privilege
    Row("admin", "resolve", "mx/secret", Ok("1.0.0"), arg="mx"),
    Row("mx", "resolve", "mx/mixed", Ok("2.0.0")),
    Row("other", "resolve", "mx/mixed", Ok("1.0.0")),
    Row("mx", "list-versions", "mx/mixed", Ok(["2.0.0", "1.0.0"])),
    Row("other", "list-versions", "mx/mixed", Ok(["1.0.0"])),
    Row("other", "list-versions", "mx/secret", NO_ALGORITHM),
    Row("other", "list-algorithms", "", Ok(lambda got: "mx/mixed" in got and "mx/secret" not in got,
                                           "without mx/secret")),
    Row("mx", "list-algorithms", "", Ok(lambda got: {"mx/mixed", "mx/secret"} <= set(got), "with mx/secret")),
    Row("mx", "call", "mx/relay>mx/secret", Ok("mx/secret 1.0.0")),     # mx's algorithm
    Row("other", "call", "other/relay>mx/secret", NO_ALGORITHM),
    Row("mx", "call", "other/relay>mx/secret", NO_ALGORITHM),           # the piping algorithm's owner counts
    # --- 2. algorithm permissions ---------------------------------------------------------
    Row("mx", "call", "mx/relay>other/echo", denied("can_call:other/echo")),   # the caller's sidecar
    Row("mx", "call", "other/relay>mx/echo", Ok("hi")),
    Row("mx", "call", "mx/private", Ok("hi")),
    Row("other", "call", "mx/private", denied("owner:mx")),
    Row("admin", "call", "mx/private", denied("owner:mx")),
    Row("mx-pub", "call", "mx/private", denied("key:algorithms:mx/private")),
    Row("mx", "call", "mx/relay>mx/private", Ok("hi")),
    Row("mx", "call", "other/relay>mx/private", denied("owner:mx")),
    Row("other", "call", "other/relay>mx/private", denied("owner:mx")),
    # the callee's sidecar checks again (skipping the caller's: straight to the inbound port)
    Row("cert:mx/relay@1.0.0", "inbound", "mx/echo", Ok("hi")),
    Row("cert:other/echo@1.0.0", "inbound", "mx/echo", denied("can_call:mx/echo")),
    Row("cert:ghost/none@1.0.0", "inbound", "mx/echo", denied("can_call:mx/echo")),
    Row("cert:mx/relay@1.0.0", "inbound", "mx/private", Ok("hi")),
    Row("cert:other/relay@1.0.0", "inbound", "mx/private", denied("owner:mx")),
    # --- 3. identity (mTLS) ---------------------------------------------------------------
    # a certificate naming X claiming to be Y (algomesh-caller) is X
    Row("cert:other/echo@1.0.0", "inbound", "mx/echo", denied("can_call:mx/echo"), arg="caller=mx/relay@1.0.0"),
    Row("cert:mx/relay@1.0.0", "inbound", "mx/echo", Ok("hi"), arg="caller=other/echo@1.0.0"),
    # only the control plane may say whose key a call runs for
    Row("cert:other/relay@1.0.0", "inbound", "mx/private", denied("owner:mx"), arg="key-owner=mx"),
    Row("plain", "inbound", "mx/echo", HANDSHAKE),
    Row("foreign-ca", "inbound", "mx/echo", HANDSHAKE),
    Row("expired", "inbound", "mx/echo", HANDSHAKE),
    Row("plain", "mesh-watch", "", HANDSHAKE),
    Row("plain", "mesh-resolve", "mx/echo", HANDSHAKE),
    Row("foreign-ca", "mesh-resolve", "mx/echo", HANDSHAKE),
    Row("foreign-ca", "mesh-watch", "", HANDSHAKE),
    Row("expired", "mesh-resolve", "mx/echo", HANDSHAKE),
    Row("cert:ops-tool", "mesh-watch", "", UNAUTH),            # not an algorithm@version
    Row("cert:ops-tool", "mesh-resolve", "mx/echo", UNAUTH),
    Row("cert:ops/tests@0", "mesh-watch", "", Ok()),
    Row("cert:mx/echo@1.0.0", "mesh-watch", "", Ok()),
    Row("cert:mx/phantom@1.0.0", "mesh-register", "mx/phantom@1.0.0", Ok()),
    Row("cert:mx/phantom@1.0.0", "mesh-register", "mx/echo@1.0.0", denied("mesh:mx/echo@1.0.0")),
    Row("cert:mx/phantom@1.0.0", "mesh-register", "mx/phantom@2.0.0", denied("mesh:mx/phantom@2.0.0")),
    Row("cert:mx/phantom@1.0.0", "mesh-deregister", "mx/echo", denied("mesh:mx/phantom@1.0.0")),
    Row("cert:mx/echo@1.0.0", "mesh-resolve", "mx/secret", Ok("1.0.0")),
    Row("cert:other/echo@1.0.0", "mesh-resolve", "mx/secret", NO_ALGORITHM),
    Row("cert:other/echo@1.0.0", "mesh-resolve", "mx/secret", NO_ALGORITHM, arg="mx"),
    Row("cert:mx/echo@1.0.0", "mesh-locate", "mx/mixed", Ok("2.0.0")),
    Row("cert:other/echo@1.0.0", "mesh-locate", "mx/mixed", Ok("1.0.0")),
    Row("cert:mx/echo@1.0.0", "mesh-create-key", "mx", denied("mesh-port")),
    Row("cert:mx/echo@1.0.0", "mesh-issue-cert", "mx/echo@2.0.0", denied("mesh-port")),
    Row("cert:mx/echo@1.0.0", "mesh-revoke-key", "fresh:mx", denied("mesh-port")),
    Row("cert:mx/echo@1.0.0", "mesh-publish", "mx/owned", denied("mesh-port")),
    Row("cert:mx/echo@1.0.0", "mesh-scale", "mx/echo", denied("mesh-port")),
    Row("cert:mx/echo@1.0.0", "mesh-list-keys", "", denied("mesh-port")),
    Row("cert:mx/echo@1.0.0", "mesh-list-algorithms", "", denied("mesh-port")),
    # --- 4. runaway pipelines --------------------------------------------------------------
    Row("mx", "call", "mx/relay>other/relay>mx/relay>mx/echo", Err(C.FAILED_PRECONDITION, "CALL_CYCLE")),
    Row("mx", "call", "mx/relay*40>mx/echo", Err(C.FAILED_PRECONDITION, "CALL_DEPTH_EXCEEDED")),
    # --- 5. limits -------------------------------------------------------------------------
    Row("mx", "call-big", "mx/echo", Err(C.RESOURCE_EXHAUSTED, "PAYLOAD_TOO_LARGE")),
    Row("mx", "call-while-busy", "mx/sleepy", Err(C.RESOURCE_EXHAUSTED, "OVERLOADED")),
    # --- 6. --insecure (a second mesh) --------------------------------------------------------
    Row("none", "insecure-banner", "", Ok("WARNING, no admin key")),
    Row("none", "insecure-call", "ins/echo", Ok("hi")),
    Row("forged", "insecure-call", "ins/echo", Ok("hi")),
    Row("none", "insecure-publish", "ins/new", Ok(True)),
    Row("none", "insecure-issue-cert", "ops/debug@0", INVALID),
    Row("plain", "insecure-mesh-watch", "", Ok()),
]


# --- the world the rows run in ---------------------------------------------------------------

@dataclass
class Creds:
    ca: bytes
    cert: bytes
    key: bytes


@dataclass
class Outcome:
    code: grpc.StatusCode
    value: Any = None
    details: str = ""
    trailing: tuple = ()
    info: error_details_pb2.ErrorInfo | None = None


def _error_info(trailing: tuple) -> error_details_pb2.ErrorInfo | None:
    raw = dict(trailing).get(STATUS_DETAILS_KEY)
    if not isinstance(raw, bytes):
        return None
    for any_msg in status_pb2.Status.FromString(raw).details:
        if any_msg.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_msg.Unpack(info)
            return info
    return None


def attempt(fn: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(C.OK, fn())
    except grpc.RpcError as exc:
        trailing = tuple(exc.trailing_metadata() or ())
        return Outcome(exc.code(), None, exc.details() or "", trailing, _error_info(trailing))


def foreign_credentials(identity: str) -> tuple[bytes, bytes]:
    """A certificate naming ``identity`` (and mesh.algomesh) from a CA this mesh never saw."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "algomesh mesh CA")])  # a look-alike
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("mesh.algomesh")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def secure_channel(creds: Creds, address: str) -> grpc.Channel:
    return grpc.secure_channel(
        address, grpc.ssl_channel_credentials(creds.ca, creds.key, creds.cert),
        options=(*_wire.CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", "mesh.algomesh"),
                 ("grpc.use_local_subchannel_pool", 1)))


def stop_mesh(m) -> None:
    pids = descendants(m.process.pid)
    m.stop()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in pids:
        if alive(p):
            os.kill(p, signal.SIGKILL)


@dataclass
class World:
    mesh: Any
    mesh_address: str           # the control plane's mesh port
    folder: Path                # where published folders are made
    public: grpc.Channel
    keys: dict[str, str]        # principal -> the whole key
    ids: dict[str, str]         # principal -> its key's id
    secrets: set[str]           # every key (and secret part) this module made or saw
    expired: Creds
    expired_at: float           # time.monotonic() after which ``expired`` is
    foreign: Creds
    certs: dict[str, Creds] = field(default_factory=dict)
    channels: dict[tuple[str, str], grpc.Channel] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    insecure: Any = None

    # keys -------------------------------------------------------------------------------

    def remember(self, key: str) -> None:
        self.secrets.add(key)
        self.secrets.add(key.split("_", 2)[2])  # amk_<id>_<secret>: the secret alone, too

    def metadata(self, who: str) -> tuple[tuple[str, str], ...]:
        if who == "none":
            return ()
        if who == "garbage":
            return (("authorization", "Simple not-a-key"),)
        return (("authorization", f"Simple {self.keys[who]}"),)

    def admin(self) -> algomesh.Client:
        return algomesh.client(self.keys["admin"], self.mesh.address)

    def new_key(self, owner: str, **scopes) -> tuple[str, str]:
        with self.admin() as c:
            resp = c.create_key(owner, **scopes)
        self.remember(resp.secret)
        return resp.secret, resp.key.id

    def registry(self, who: str) -> tuple[registry_pb2_grpc.RegistryStub, tuple]:
        return registry_pb2_grpc.RegistryStub(self.public), self.metadata(who)

    # certificates ---------------------------------------------------------------------------

    def creds(self, who: str) -> Creds:
        if who == "expired":
            time.sleep(max(0.0, self.expired_at - time.monotonic()))
            return self.expired
        if who == "foreign-ca":
            return self.foreign
        identity = who.removeprefix("cert:")
        if identity not in self.certs:
            with self.admin() as c:
                pems = c.issue_certificate(identity)
            self.certs[identity] = Creds(pems.ca.encode(), pems.cert.encode(), pems.key.encode())
        return self.certs[identity]

    def channel(self, who: str, address: str) -> grpc.Channel:
        """A channel to a mesh party (a sidecar, the mesh port) as ``who``; refusals get a
        channel of their own, never a cached one."""
        if who == "plain":
            ch = grpc.insecure_channel(address, options=(("grpc.use_local_subchannel_pool", 1),))
            self.cleanups.append(ch.close)
            return ch
        if not who.startswith("cert:"):
            ch = secure_channel(self.creds(who), address)
            self.cleanups.append(ch.close)
            return ch
        if (who, address) not in self.channels:
            self.channels[(who, address)] = secure_channel(self.creds(who), address)
        return self.channels[(who, address)]

    def instance(self, name: str) -> registry_pb2.Instance:
        with self.admin() as c:
            found = [i for i in c.instances(name) if i.state == "passing"]
        assert found, f"no passing instance of {name}"
        return found[0]

    def next_version(self, name: str) -> str:
        self.versions[name] = self.versions.get(name, 0) + 1
        return f"1.0.{self.versions[name]}"


def _keyset(w: World) -> None:
    """Every key, made once by the admin."""
    w.keys["mx"], w.ids["mx"] = w.new_key("mx")
    w.keys["other"], w.ids["other"] = w.new_key("other")
    w.keys["mx-pub"], w.ids["mx-pub"] = w.new_key("mx", algorithms=["mx/pub*"])
    w.keys["mx-nopipe"], w.ids["mx-nopipe"] = w.new_key("mx", pipelines=False)
    w.keys["ops-admin"], w.ids["ops-admin"] = w.new_key("ops", admin=True, data="write")
    w.keys["revoked"], w.ids["revoked"] = w.new_key("mx")
    with w.admin() as c:
        c.revoke_key(w.ids["revoked"])
    forged = f"amk_{os.urandom(8).hex()}_{'A' * 43}"
    w.keys["forged"] = forged
    mx_id = w.ids["mx"]
    w.keys["mx-wrong-secret"] = f"amk_{mx_id}_{'B' * 43}"
    for k in (forged, w.keys["mx-wrong-secret"]):
        w.remember(k)


def _publish_all(w: World) -> None:
    d = w.folder
    with w.admin() as c:
        for owner in ("mx", "other"):
            c.publish(write_algorithm(d / f"{owner}-echo", f"{owner}/echo", "1.0.0", ECHO))
        c.publish(write_algorithm(d / "pubecho", "mx/pubecho", "1.0.0", ECHO))
        c.publish(write_algorithm(d / "mx-relay", "mx/relay", "1.0.0", RELAY,
                                  extra_toml='[permissions]\ncan_call = ["mx/*", "other/relay"]\n'
                                             "[scaling]\nconcurrency = 40\nmax_in_flight = 64\n"))
        c.publish(write_algorithm(d / "other-relay", "other/relay", "1.0.0", RELAY,
                                  extra_toml='[permissions]\ncan_call = ["*"]\n'))
        c.publish(write_algorithm(d / "threaded", "mx/threaded", "1.0.0", THREADED,
                                  extra_toml='[permissions]\ncan_call = ["mx/*"]\n'))
        c.publish(write_algorithm(d / "private", "mx/private", "1.0.0", ECHO,
                                  extra_toml='[permissions]\ncallability = "private"\n'))
        c.publish(write_algorithm(d / "secret", "mx/secret", "1.0.0", WHOAMI.format(name="mx/secret",
                                                                                     version="1.0.0")),
                  private=True)
        c.publish(write_algorithm(d / "mixed1", "mx/mixed", "1.0.0", WHOAMI.format(name="mx/mixed",
                                                                                    version="1.0.0")))
        c.publish(write_algorithm(d / "mixed2", "mx/mixed", "2.0.0", WHOAMI.format(name="mx/mixed",
                                                                                    version="2.0.0")),
                  private=True)
        c.publish(write_algorithm(d / "sleepy", "mx/sleepy", "1.0.0", SLEEPY,
                                  extra_toml="[scaling]\nconcurrency = 1\nmax_in_flight = 1\n"))


def _warm(w: World) -> None:
    """Start one instance of everything the rows call, all at once (cold starts overlap)."""
    with algomesh.client(w.keys["mx"], w.mesh.address) as mx, \
            algomesh.client(w.keys["other"], w.mesh.address) as other:
        pending = [mx.algo(n).set_options(timeout=120).pipe(x) for n, x in (
            ("mx/echo", "warm"), ("mx/pubecho", "warm"), ("mx/private", "warm"), ("mx/secret", "warm"),
            ("mx/mixed", "warm"), ("mx/sleepy", 0), ("mx/relay", {"to": ["mx/echo"], "v": "warm"}),
            ("mx/threaded", {"to": ["mx/echo"], "v": "warm"}), ("other/relay", {"to": ["mx/echo"], "v": "warm"}))]
        pending.append(other.algo("mx/mixed").set_options(timeout=120).pipe("warm"))
        for r in pending:
            r.result  # raises if anything failed to start


@pytest.fixture(scope="module")
def world(mesh, tmp_path_factory):
    m = re.search(r"^\s+mesh\s+(\S+) \(", mesh.banner, re.M)
    assert m, mesh.banner
    with mesh.client() as c:
        expired = c.issue_certificate("mx/relay@1.0.0", lifetime=1)
    expired_at = time.monotonic() + 2.5
    foreign_cert, foreign_key = foreign_credentials("mx/relay@1.0.0")
    w = World(mesh=mesh, mesh_address=m.group(1), folder=tmp_path_factory.mktemp("matrix"),
              public=grpc.insecure_channel(mesh.address, options=_wire.CHANNEL_OPTIONS),
              keys={"admin": mesh.api_key}, ids={}, secrets=set(),
              expired=Creds(expired.ca.encode(), expired.cert.encode(), expired.key.encode()),
              expired_at=expired_at, foreign=Creds(expired.ca.encode(), foreign_cert, foreign_key))
    w.remember(mesh.api_key)
    _keyset(w)
    _publish_all(w)
    _warm(w)
    yield w
    for ch in w.channels.values():
        ch.close()
    for fn in w.cleanups:
        fn()
    w.public.close()
    if w.insecure is not None:
        stop_mesh(w.insecure)


# --- actions: (world, row) -> Outcome ------------------------------------------------------

def _hops(target: str) -> tuple[str, Any]:
    """``a>b*3>c`` -> (a, the relay input for b b b c); a plain target -> (it, "hi")."""
    hops: list[str] = []
    for part in target.split(">"):
        name, _, times = part.partition("*")
        hops += [name] * int(times or 1)
    if len(hops) == 1:
        return hops[0], "hi"
    return hops[0], {"to": hops[1:], "v": "hi"}


def _call_request(value: Any) -> bytes:
    return payload_pb2.CallRequest(input=encode(value)).SerializeToString()


def _mesh_call(channel: grpc.Channel, target: str, value: Any, metadata: tuple, timeout: float = TIMEOUT):
    body = channel.unary_unary(_wire.CALL_METHOD)(_call_request(value), metadata=metadata, timeout=timeout)
    return decode(payload_pb2.CallResponse.FromString(body).output)


def act_call(w: World, row: Row, who: str | None = None) -> Outcome:
    first, value = _hops(row.target)
    md = ((_wire.TARGET_KEY, first),) + w.metadata(who or row.who)
    return attempt(lambda: _mesh_call(w.public, first, value, md))


def act_call_big(w: World, row: Row) -> Outcome:
    md = ((_wire.TARGET_KEY, row.target),) + w.metadata(row.who)
    return attempt(lambda: _mesh_call(w.public, row.target, b"x" * (11 * 1024 * 1024), md))


def act_call_while_busy(w: World, row: Row) -> Outcome:
    """One call holds the instance's only slot (max_in_flight = 1) for 3 s; quick calls made
    meanwhile are shed at once (the first few may still beat it there on a busy machine)."""
    md = ((_wire.TARGET_KEY, row.target),) + w.metadata(row.who)
    busy = w.public.unary_unary(_wire.CALL_METHOD).future(_call_request(3), metadata=md, timeout=TIMEOUT)
    deadline = time.monotonic() + 2.5
    while True:
        time.sleep(0.3)
        t0 = time.monotonic()
        out = attempt(lambda: _mesh_call(w.public, row.target, 0, md))
        assert time.monotonic() - t0 < 1.0, "a call waited for the slot instead of being shed"
        if out.code is not C.OK or time.monotonic() > deadline:
            break
    assert decode(payload_pb2.CallResponse.FromString(busy.result()).output) == 3
    return out


def _publish_request(w: World, name: str, private: bool = False) -> registry_pb2.PublishRequest:
    folder = write_algorithm(w.folder / f"{name.replace('/', '-')}-{uuid.uuid4().hex[:8]}", name,
                             w.next_version(name), ECHO)
    return registry_pb2.PublishRequest(archive=pack(folder), private=private)


def _instance(target: str) -> registry_pb2.Instance:
    name, _, version = target.rpartition("@")
    return registry_pb2.Instance(id=f"matrix-{uuid.uuid4().hex[:12]}", algorithm=name, version=version,
                                 address="127.0.0.1:9", state="passing", started_at=int(time.time()))


def _registry_action(w: World, row: Row, stub: registry_pb2_grpc.RegistryStub, md: tuple) -> Outcome:
    """The Registry RPC ``row.action`` names (sans ``mesh-``), through ``stub`` with ``md``."""
    action, t = row.action.removeprefix("mesh-"), row.target
    kw = dict(metadata=md, timeout=TIMEOUT)
    if action == "publish":
        request = _publish_request(w, t)
        return attempt(lambda: stub.Publish(request, **kw).created)
    if action == "resolve":
        return attempt(lambda: stub.Resolve(registry_pb2.ResolveRequest(target=t, requester=row.arg or ""),
                                            **kw).version.manifest.version)
    if action == "locate":
        return attempt(lambda: stub.Locate(registry_pb2.LocateRequest(target=t, requester=row.arg or ""),
                                           **kw).version.manifest.version)
    if action == "list-algorithms":
        return attempt(lambda: sorted(a.name for a in stub.ListAlgorithms(
            registry_pb2.ListAlgorithmsRequest(), **kw).algorithms))
    if action == "list-versions":
        return attempt(lambda: [v.manifest.version for v in stub.ListVersions(
            registry_pb2.ListVersionsRequest(name=t), **kw).versions])
    if action == "list-instances":
        return attempt(lambda: sorted({i.algorithm for i in stub.ListInstances(
            registry_pb2.ListInstancesRequest(algorithm=t), **kw).instances}))
    if action == "scale":
        return attempt(lambda: stub.Scale(registry_pb2.ScaleRequest(target=t, instances=1),
                                          **kw).version.manifest.version)
    if action == "create-key":
        def create() -> str:
            resp = stub.CreateKey(registry_pb2.CreateKeyRequest(owner=t), **kw)
            w.remember(resp.secret)
            return resp.key.owner
        return attempt(create)
    if action == "list-keys":
        return attempt(lambda: [k.owner for k in stub.ListKeys(registry_pb2.ListKeysRequest(owner=t), **kw).keys])
    if action == "revoke-key":
        victim = t
        if t.startswith("fresh:"):  # a key made for this row, of that owner
            key, key_id = w.new_key(t.removeprefix("fresh:"))
            victim = f"fresh-{key_id}"
            w.keys[victim], w.ids[victim] = key, key_id
        key_id = w.ids.get(victim, victim)
        out = attempt(lambda: stub.RevokeKey(registry_pb2.RevokeKeyRequest(id=key_id), **kw))
        if victim in w.keys and out.code is not C.OK:  # refused: the key still works
            assert act_call(w, Row(victim, "call", "mx/echo", Ok()), who=victim).code is C.OK
        return out
    if action == "issue-cert":
        def issue() -> str:
            resp = stub.IssueCertificate(registry_pb2.IssueCertificateRequest(identity=t), **kw)
            cert = x509.load_pem_x509_certificate(resp.cert.encode())
            return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return attempt(issue)
    if action == "register-instance" or action == "register":
        inst = _instance(t)
        out = attempt(lambda: stub.RegisterInstance(registry_pb2.RegisterInstanceRequest(instance=inst), **kw))
        if out.code is C.OK:  # take it back out (an admin may deregister any instance)
            admin_stub, admin_md = w.registry("admin")
            admin_stub.DeregisterInstance(registry_pb2.DeregisterInstanceRequest(id=inst.id), metadata=admin_md,
                                          timeout=TIMEOUT)
        return out
    if action == "deregister-instance" or action == "deregister":
        instance_id = w.instance(t).id if "/" in t else t
        return attempt(lambda: stub.DeregisterInstance(registry_pb2.DeregisterInstanceRequest(id=instance_id),
                                                       **kw))
    if action == "watch":
        def first_view() -> int:
            stream = stub.Watch(registry_pb2.WatchRequest(), **kw)
            try:
                view = next(stream)
            finally:
                stream.cancel()
            assert view.revision > 0
            return view.revision
        return attempt(first_view)
    raise AssertionError(f"unknown action {row.action}")


def act_public(w: World, row: Row) -> Outcome:
    stub, md = w.registry(row.who)
    return _registry_action(w, row, stub, md)


def act_mesh_port(w: World, row: Row) -> Outcome:
    channel = w.channel(row.who, w.mesh_address)
    return _registry_action(w, row, registry_pb2_grpc.RegistryStub(channel), ())


def act_inbound(w: World, row: Row) -> Outcome:
    """Mesh/Call straight to an instance's sidecar, with the headers sidecars send each other."""
    inst = w.instance(row.target)
    md = ((_wire.TARGET_KEY, f"{inst.algorithm}/{inst.version}"),)
    if row.arg:
        header, _, value = row.arg.partition("=")
        md += (({"caller": _wire.CALLER_KEY, "key-owner": _wire.KEY_OWNER_KEY}[header], value),)
    channel = w.channel(row.who, inst.address)
    return attempt(lambda: _mesh_call(channel, row.target, "hi", md, timeout=10))


def act_revoke_then_call(w: World, row: Row) -> Outcome:
    """A fresh key of ``row.target``'s works; ``who`` revokes it; the very next call with it."""
    key, key_id = w.new_key(row.target)
    probe = Row(row.target, "call", "mx/echo", Ok())
    w.keys[f"fresh-{key_id}"] = key
    assert act_call(w, probe, who=f"fresh-{key_id}").value == "hi"
    stub, md = w.registry(row.who)
    out = attempt(lambda: stub.RevokeKey(registry_pb2.RevokeKeyRequest(id=key_id), metadata=md, timeout=TIMEOUT))
    if out.code is not C.OK:
        assert act_call(w, probe, who=f"fresh-{key_id}").value == "hi"  # still works
        return out
    return act_call(w, probe, who=f"fresh-{key_id}")


# --- the --insecure mesh ---------------------------------------------------------------------

def insecure_mesh(w: World):
    if w.insecure is None:
        folder = w.folder / "insecure"
        w.insecure = start_mesh(folder / "data", "--insecure")
        with algomesh.client("", w.insecure.address) as c:
            c.publish(write_algorithm(folder / "echo", "ins/echo", "1.0.0", ECHO))
    return w.insecure


def act_insecure(w: World, row: Row) -> Outcome:
    m = insecure_mesh(w)
    action = row.action.removeprefix("insecure-")
    with grpc.insecure_channel(m.address, options=_wire.CHANNEL_OPTIONS) as public:
        stub = registry_pb2_grpc.RegistryStub(public)
        md = () if row.who == "plain" else w.metadata(row.who)
        if action == "banner":
            def banner() -> str:
                assert "WARNING: --insecure" in m.output, m.output
                assert "admin key" not in m.banner and "amk_" not in m.output and m.api_key is None
                assert "security  OFF" in m.banner
                return "WARNING, no admin key"
            return attempt(banner)
        if action == "call":
            return attempt(lambda: _mesh_call(public, row.target, "hi", ((_wire.TARGET_KEY, row.target),) + md))
        if action == "publish":
            request = _publish_request(w, row.target)
            return attempt(lambda: stub.Publish(request, metadata=md, timeout=TIMEOUT).created)
        if action == "issue-cert":
            return attempt(lambda: stub.IssueCertificate(
                registry_pb2.IssueCertificateRequest(identity=row.target), metadata=md, timeout=TIMEOUT))
        if action == "mesh-watch":
            mesh_address = re.search(r"^\s+mesh\s+(\S+) \(sidecars; plain\)", m.banner, re.M).group(1)
            with grpc.insecure_channel(mesh_address) as ch:
                return _registry_action(w, Row(row.who, "watch", "", row.expect), registry_pb2_grpc.RegistryStub(ch),
                                        ())
    raise AssertionError(f"unknown action {row.action}")


ACTIONS: dict[str, Callable[[World, Row], Outcome]] = {
    "call": act_call, "call-big": act_call_big, "call-while-busy": act_call_while_busy,
    "publish": act_public, "inbound": act_inbound, "revoke-then-call": act_revoke_then_call,
    **{a: act_public for a in ("resolve", "locate", "list-algorithms", "list-versions", "list-instances",
                               "scale", "create-key", "list-keys", "revoke-key", "issue-cert",
                               "register-instance", "deregister-instance", "watch")},
    **{f"mesh-{a}": act_mesh_port for a in ("resolve", "locate", "watch", "register", "deregister",
                                            "create-key", "issue-cert", "revoke-key", "publish", "scale",
                                            "list-keys", "list-algorithms")},
    **{f"insecure-{a}": act_insecure for a in ("banner", "call", "publish", "issue-cert", "mesh-watch")},
}


# --- the one test ----------------------------------------------------------------------------

def _params():
    ids = [r.id for r in ROWS]
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
    assert all(r.action in ACTIONS for r in ROWS), [r.action for r in ROWS if r.action not in ACTIONS]
    return [pytest.param(r, id=r.id, marks=[pytest.mark.xfail(strict=True, reason=r.xfail)] if r.xfail else [])
            for r in ROWS]


@pytest.mark.parametrize("row", _params())
def test_matrix(world: World, row: Row):
    out = ACTIONS[row.action](world, row)
    # No status, message or detail ever carries a key's secret.
    blob = out.details + "".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for _, v in out.trailing)
    leaked = [s[:12] + "…" for s in world.secrets if s in blob]
    assert not leaked, f"an error carries a key: {leaked}"
    want = row.expect
    if isinstance(want, Ok):
        assert out.code is C.OK, f"expected ok, got {out.code.name} {out.info.reason if out.info else ''}: " \
                                 f"{out.details}"
        want.check(out.value)
        return
    got_reason = out.info.reason if out.info else None
    assert (out.code, got_reason) == (want.code, want.reason), f"got {out.code.name} {got_reason}: {out.details}"
    if want.reason is None:
        return  # a handshake refusal: gRPC's own, nothing of algomesh's ran
    assert out.info.domain == DOMAIN and REASONS[want.reason].code is want.code
    if want.permission is not None or want.reason == "PERMISSION_DENIED":
        assert out.info.metadata.get("permission") == want.permission, dict(out.info.metadata)


def test_no_key_in_the_mesh_output_or_logs(world: World):
    """After every row above: nothing `algomesh up` printed after its banner, and no log file,
    holds a key (the banner's admin key is the one thing it may show, once)."""
    files = [p for p in (world.mesh.data_dir / "logs").rglob("*") if p.is_file()]
    texts = [world.mesh.output[len(world.mesh.banner):]] + [p.read_text(errors="replace") for p in files]
    for s in world.secrets:
        assert not any(s in t for t in texts), f"a key ({s[:12]}…) appears in the mesh's output or logs"
