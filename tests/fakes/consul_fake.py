"""A FAKE of Consul's HTTP API, for tests only. This is NOT Consul.

No Consul binary can be installed where algomesh's tests run, so this module serves
a transport-level stand-in: a real HTTP server on 127.0.0.1 that py-consul (or curl,
or any HTTP client) talks to exactly as it talks to one Consul agent that is also the
only server of datacenter ``dc1``.  Standard library only.

    fake = FakeConsul()
    address = fake.start()          # "127.0.0.1:PORT" (port 0 picks a free port)
    c = consul.Consul(host="127.0.0.1", port=int(address.rsplit(":", 1)[1]))
    ...
    fake.stop()                     # ends every blocked query at once; never hangs

or ``with FakeConsul() as fake: ...``, or by hand: ``python -m tests.fakes.consul_fake --port 8500``.
``stop()`` behaves like an agent that goes away: queries blocked at that moment get no
answer (their connections close; clients see a connection error) and new connections
are refused.

What it follows
---------------
Consul's documentation (developer.hashicorp.com/consul/api-docs, i.e. the
website/content/api-docs/*.mdx pages of hashicorp/consul), and where the pages are
silent, what Consul's own source does (agent/*_endpoint.go, agent/local/state.go,
agent/checks, agent/consul/state/{kvs,catalog,txn}.go):

* features/blocking -- "Blocking Queries": ``?index=N&wait=D`` on KV, health and
  catalog reads holds the request until the result's index is > N or the wait ends
  (default 5m, capped at 10m, plus up to wait/16 of random jitter; ``wait=0s`` means
  the default, as in Consul).  Every such read answers ``X-Consul-Index`` (never 0,
  Consul's ``setIndex`` turns 0 into 1), ``X-Consul-KnownLeader: true``,
  ``X-Consul-LastContact: 0``, ``X-Consul-Effective-Consistency`` and
  ``X-Consul-Query-Backend: blocking-query``.  The agent, status and txn endpoints do
  not carry ``X-Consul-Index``, exactly like Consul.
* One global, monotonically increasing Raft-like index shared by all writes, with
  Consul's per-table bookkeeping on top of it:
  - KV (kv.mdx): a single key reads its ModifyIndex, or the KV table's index when it
    is missing; ``?recurse``/``?keys`` read the highest ModifyIndex under the prefix,
    including tombstones of deleted keys (so deleting the newest key moves the index
    forward, never back), or the KV table's index when nothing matches.  A PUT that
    changes nothing (same value and flags) keeps the ModifyIndex, as in Consul.
    ``?cas=0`` creates only if absent, ``?cas=N`` writes only if ModifyIndex == N;
    DELETE ``?cas=N`` (true for an absent key, like Consul), ``?recurse``, ``?raw``,
    ``?keys`` + ``?separator``, ``?flags``.  Values over 512 KiB answer 413.
  - health/service, catalog/service: the per-service index ("service.<name>")
    bumped by any change to that service's instances or checks (or to node checks);
    for a service with no instances the "last extinction" index, else the catalog
    index.  catalog/services: max of the nodes and services tables (check status
    changes do not move it, as in Consul).
* agent/service.mdx + agent/check.mdx: register (camelCase, PascalCase or
  snake_case keys, as Consul accepts), ``Check``/``Checks`` with ``TTL``, initial
  ``Status`` (default ``critical``), ``CheckID``/``Name`` (default ``service:<id>``,
  ``service:<id>:<n>`` when several, name ``Service '<name>' check``), ``Notes``,
  ``DeregisterCriticalServiceAfter``; ``?replace-existing-checks``; re-registering
  keeps an existing check's status and output (Consul's check-state snapshot);
  deregister (404 "Unknown service ID" for an unknown id, as Consul >= 1.8 does);
  ``/v1/agent/check/pass|warn|fail/<id>?note=`` and ``/update/<id>`` with
  ``{"Status", "Output"}`` (404 "Unknown check ID" for an unknown id; output longer
  than OutputMaxSize, 4096, is truncated like Consul's); ``/v1/agent/check/register``
  and ``/deregister`` for TTL checks.
* TTL semantics of agent/checks/check.go + agent/local/state.go: a TTL check not
  updated within its TTL becomes critical with output ``TTL expired`` (or ``TTL
  expired (last output before timeout follows): <last output>``).  A status change is
  written to the catalog at once (new index, blocked health queries wake); an update
  that only changes the output is visible in /v1/agent/checks at once but reaches the
  catalog (health endpoints) only after ``check_update_interval`` (Consul's
  check_update_interval, 5m by default: interval/2 + random(interval)); an update that
  changes nothing writes nothing.  ``DeregisterCriticalServiceAfter``: the reaper runs
  every ``check_reap_interval`` (30s) and removes a service whose check has been
  critical -- counted from the moment an update made it critical, as in Consul -- for
  longer than max(DeregisterCriticalServiceAfter, ``check_deregister_interval_min``
  (1m)).  Those three are Consul runtime settings; tests pass small values.
* health.mdx / catalog.mdx: ``/v1/health/service/<name>`` (``?passing``: only entries
  whose checks, node checks included, are all ``passing``; ``?tag=`` repeatable,
  case-insensitive, all must match; ``?node-meta=k:v``), ``/v1/health/checks/<svc>``,
  ``/v1/health/node/<node>``, ``/v1/health/state/<state>``,
  ``/v1/catalog/service/<name>`` (``?tag=``), ``/v1/catalog/services``,
  ``/v1/catalog/nodes``, ``/v1/catalog/datacenters``.  One node (``fake-consul``,
  127.0.0.1, dc1) with its ``serfHealth`` check (always passing) in every health
  entry, and the ``consul`` service a Consul server registers for itself.
  ``Service.Address`` is ``""`` when the registration gave none -- clients must fall
  back to ``Node.Address``, as with real Consul.
* status.mdx: ``/v1/status/leader`` -> ``"127.0.0.1:8300"``, ``/v1/status/peers``.
* txn.mdx: ``PUT /v1/txn`` with KV verbs set, cas, get, get-or-empty, get-tree,
  check-index, check-not-exists, check-session, delete, delete-cas, delete-tree (and
  lock/unlock, which fail for want of sessions); all ops run in order against one
  copy, every failing op is reported, and the whole transaction commits under one
  index or not at all: 200 ``{"Results": [...], "Errors": null}`` or 409
  ``{"Results": null, "Errors": [{"OpIndex", "What"}]}`` with Consul's messages.
  At most 128 ops (413 beyond).
* HTTP behaviour of Consul's mux: unknown paths answer 404 (empty body); a known path
  with a wrong method answers 405 ``method X not allowed`` with an ``Allow`` header;
  OPTIONS answers 200 with ``Allow``; non-clean paths (``//``, ``..``) get Go's 301 to
  the cleaned path; ``?dc=`` other than dc1 answers 500 "No path to datacenter";
  bad ``?index``/``?wait`` answer 400; ``?stale`` with ``?consistent`` answers 400;
  ``?pretty`` indents.

What it deliberately does NOT implement
---------------------------------------
ACLs (tokens are accepted and ignored), sessions and locks (``?acquire`` fails with
Consul's "invalid session", ``?release`` answers false), more than one datacenter,
Raft/leader election/snapshots, gossip/Serf (serfHealth is always passing), DNS,
Connect/service mesh/proxies/gateways (``Kind`` is refused), prepared queries, events,
config entries, ACL/operator/peering/partition/namespace APIs, agent caching
(``?cached`` is ignored), streaming, hash-based blocking on agent endpoints,
``?filter`` expressions and ``?peer`` (both refused with 400 rather than ignored),
script/HTTP/TCP/gRPC/alias checks (refused with 400: only TTL checks exist here),
maintenance mode, the catalog register/deregister and Node/Service/Check txn
operations (400), tombstone garbage collection (tombstones live until stop), and
persistence (state lives in memory for the life of the object).  Endpoints that are
not served answer 404 like unknown paths.  Version string: this models Consul 1.21.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import posixpath
import random
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["FakeConsul", "parse_go_duration"]

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
VALID_STATUSES = (PASSING, WARNING, CRITICAL)
CONSUL_VERSION = "1.21.4"          # the Consul whose behaviour is modelled
KV_MAX_VALUE_SIZE = 512 * 1024     # kv_max_value_size default
MAX_TXN_OPS = 128
OUTPUT_MAX_SIZE = 4096             # checks.DefaultBufSize
INVALID_CHECK_MESSAGE = "Must provide TTL or Script/DockerContainerID/HTTP/TCP and Interval"

_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
              "m": 60.0, "h": 3600.0}
_DUR_RE = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string ("10s", "1m30s", "250ms", "0"); ValueError if invalid."""
    s, sign = text, 1.0
    if s[:1] in ("+", "-"):
        sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {text!r}")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DUR_RE.match(s, pos)
        if not m:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def _go_clean_path(p: str) -> str:
    """Go's path cleaning as done by net/http.ServeMux (keeps a trailing slash)."""
    if not p:
        return "/"
    if not p.startswith("/"):
        p = "/" + p
    np = posixpath.normpath(p)
    np = "/" + np.lstrip("/")
    if p.endswith("/") and np != "/":
        np += "/"
    return np


def _parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


def _parse_uint(text: str, name: str) -> int:
    if not re.fullmatch(r"\d+", text or "") or int(text) >= 2 ** 64:
        raise _HTTPError(500, f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return int(text)


class _HTTPError(Exception):
    def __init__(self, code: int, reason: str = "", headers: list | None = None):
        super().__init__(reason)
        self.code, self.reason, self.headers = code, reason, headers or []


class _Resp:
    __slots__ = ("code", "body", "headers")

    def __init__(self, code: int = 200, body: bytes = b"", headers: list | None = None):
        self.code, self.body, self.headers = code, body, list(headers or [])


def _json_resp(obj, code: int = 200, pretty: bool = False) -> _Resp:
    if pretty:
        body = json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
    else:
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return _Resp(code, body.encode(), [("Content-Type", "application/json"), ("Vary", "Accept-Encoding")])


def _text_resp(code: int, text: str) -> _Resp:
    return _Resp(code, text.encode(), [("Content-Type", "text/plain; charset=utf-8")])


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


class _CI:
    """A JSON object read the way Consul decodes bodies: keys case-insensitive, snake_case too."""

    def __init__(self, obj):
        self.raw = obj if isinstance(obj, dict) else {}
        self._d = {_norm(k): v for k, v in self.raw.items()}

    def get(self, *names, default=None):
        for n in names:
            k = _norm(n)
            if k in self._d and self._d[k] is not None:
                return self._d[k]
        return default

    def has(self, *names) -> bool:
        return any(_norm(n) in self._d and self._d[_norm(n)] not in (None, "", [], {}) for n in names)


def _duration_field(value, what: str) -> float:
    """A duration in a JSON body: a Go duration string or a number of nanoseconds."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise _HTTPError(400, f"Request decode failed: {what}: invalid duration")
    if isinstance(value, (int, float)):
        return float(value) / 1e9
    if isinstance(value, str):
        try:
            return parse_go_duration(value)
        except ValueError as e:
            raise _HTTPError(400, f"Request decode failed: {what}: {e}") from None
    raise _HTTPError(400, f"Request decode failed: {what}: invalid duration")


# --------------------------------------------------------------------------- state


class _Entry:
    """One KV entry; never mutated once stored (a write stores a new one)."""
    __slots__ = ("key", "value", "flags", "create_index", "modify_index")

    def __init__(self, key, value, flags, create_index, modify_index):
        self.key, self.value, self.flags = key, value, flags
        self.create_index, self.modify_index = create_index, modify_index

    def json(self, with_value: bool = True) -> dict:
        value = None
        if with_value and self.value is not None:
            value = base64.b64encode(self.value).decode()
        return {"LockIndex": 0, "Key": self.key, "Flags": self.flags, "Value": value,
                "CreateIndex": self.create_index, "ModifyIndex": self.modify_index}


class _Svc:
    def __init__(self, sid, name, tags, address, port, meta, weights, eto, tagged, local=True):
        self.id, self.name, self.tags, self.address, self.port = sid, name, tags, address, port
        self.meta, self.weights, self.eto, self.tagged, self.local = meta, weights, eto, tagged, local
        self.create_index = self.modify_index = 0

    def sig(self):
        return (self.name, tuple(self.tags), self.address, self.port,
                json.dumps(self.meta, sort_keys=True), json.dumps(self.weights, sort_keys=True),
                self.eto, json.dumps(self.tagged, sort_keys=True))


class _Chk:
    def __init__(self, cid, name, notes, service_id, service_name, service_tags, ttl, reap_after,
                 output_max, status, output):
        self.id, self.name, self.notes = cid, name, notes
        self.service_id, self.service_name, self.service_tags = service_id, service_name, service_tags
        self.ttl, self.reap_after, self.output_max = ttl, reap_after, output_max
        self.status, self.output = status, output             # the agent's view
        self.cat_status, self.cat_output = None, None         # the catalog's view
        self.create_index = self.modify_index = 0
        self.ttl_deadline: float | None = None
        self.last_output = ""
        self.critical_since: float | None = None
        self.defer_at: float | None = None

    def sig(self, status, output):
        return (self.name, self.notes, status, output, self.service_id, self.service_name,
                tuple(self.service_tags), self.ttl)

    def cat_sig(self):
        return self.sig(self.cat_status, self.cat_output)


class _TxnError(Exception):
    pass


class _Abort(Exception):
    """The fake is stopping: drop the connection without an answer, as an agent that goes away does."""


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: "FakeConsul"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self):
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def log_message(self, format, *args):  # noqa: A002 - quiet, like a test double should be
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self):
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._write(_text_resp(400, "malformed request body"))
            return
        resp = self.server.fake._handle(self.command, self.path, body)
        if resp is None:                      # stopping: no answer, the connection just ends
            self.close_connection = True
            return
        self._write(resp)

    def _write(self, resp: _Resp):
        try:
            self.send_response_only(resp.code)
            self.send_header("Date", self.date_time_string())
            for k, v in resp.headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _dispatch


# routes: (pattern, allowed methods, handler); a pattern ending in "/" is a subtree, as in Go
_ROUTES = [
    ("/v1/kv/", ("GET", "PUT", "DELETE"), "_h_kv"),
    ("/v1/txn", ("PUT",), "_h_txn"),
    ("/v1/agent/self", ("GET",), "_h_agent_self"),
    ("/v1/agent/services", ("GET",), "_h_agent_services"),
    ("/v1/agent/checks", ("GET",), "_h_agent_checks"),
    ("/v1/agent/service/register", ("PUT",), "_h_agent_service_register"),
    ("/v1/agent/service/deregister/", ("PUT",), "_h_agent_service_deregister"),
    ("/v1/agent/service/", ("GET",), "_h_agent_service_get"),
    ("/v1/agent/check/register", ("PUT",), "_h_agent_check_register"),
    ("/v1/agent/check/deregister/", ("PUT",), "_h_agent_check_deregister"),
    ("/v1/agent/check/pass/", ("PUT",), "_h_agent_check_pass"),
    ("/v1/agent/check/warn/", ("PUT",), "_h_agent_check_warn"),
    ("/v1/agent/check/fail/", ("PUT",), "_h_agent_check_fail"),
    ("/v1/agent/check/update/", ("PUT",), "_h_agent_check_update"),
    ("/v1/catalog/datacenters", ("GET",), "_h_catalog_datacenters"),
    ("/v1/catalog/nodes", ("GET",), "_h_catalog_nodes"),
    ("/v1/catalog/services", ("GET",), "_h_catalog_services"),
    ("/v1/catalog/service/", ("GET",), "_h_catalog_service"),
    ("/v1/health/service/", ("GET",), "_h_health_service"),
    ("/v1/health/checks/", ("GET",), "_h_health_checks"),
    ("/v1/health/node/", ("GET",), "_h_health_node"),
    ("/v1/health/state/", ("GET",), "_h_health_state"),
    ("/v1/status/leader", ("GET",), "_h_status_leader"),
    ("/v1/status/peers", ("GET",), "_h_status_peers"),
]
_EXACT = {p: (m, h) for p, m, h in _ROUTES if not p.endswith("/")}
_SUBTREES = sorted(((p, m, h) for p, m, h in _ROUTES if p.endswith("/")), key=lambda r: -len(r[0]))


class FakeConsul:
    """A FAKE single-node Consul agent+server speaking Consul's HTTP API (see module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, node_name: str = "fake-consul",
                 datacenter: str = "dc1", check_update_interval: float = 300.0,
                 check_reap_interval: float = 30.0, check_deregister_interval_min: float = 60.0,
                 default_query_time: float = 300.0, max_query_time: float = 600.0,
                 kv_max_value_size: int = KV_MAX_VALUE_SIZE):
        self.host, self.port = host, port
        self.node_name, self.datacenter = node_name, datacenter
        self.node_address = "127.0.0.1"
        self.node_id = str(uuid.uuid4())
        self.check_update_interval = check_update_interval
        self.check_reap_interval = check_reap_interval
        self.check_deregister_interval_min = check_deregister_interval_min
        self.default_query_time, self.max_query_time = default_query_time, max_query_time
        self.kv_max_value_size = kv_max_value_size

        self._cond = threading.Condition(threading.RLock())
        self._stopping = False
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._conns: dict[socket.socket, threading.Thread] = {}
        self.address: str | None = None

        # the Raft-like index: 1 is Raft's own configuration entry, as in a fresh cluster
        self._index = 1
        self._kv: dict[str, _Entry] = {}
        self._tomb: dict[str, int] = {}
        self._kv_index = 0
        self._tbl = {"nodes": 0, "services": 0, "checks": 0}
        self._svc_idx: dict[str, int] = {}
        self._svc_extinct = 0
        self._services: dict[str, _Svc] = {}     # registered through this agent
        self._builtin: dict[str, _Svc] = {}      # registered by the server itself ("consul")
        self._checks: dict[str, _Chk] = {}
        self._next_reap = time.monotonic() + check_reap_interval

        idx = self._bump()                        # the node and its serfHealth check
        self._node_index = idx
        self._tbl["nodes"] = self._tbl["checks"] = idx
        idx = self._bump()                        # the server's own "consul" service
        svc = _Svc("consul", "consul", [], "", 8300,
                   {"raft_version": "3", "read_replica": "false", "serf_protocol_current": "2",
                    "serf_protocol_max": "5", "serf_protocol_min": "1", "version": CONSUL_VERSION},
                   {"Passing": 1, "Warning": 1}, False, {}, local=False)
        svc.create_index = svc.modify_index = idx
        self._builtin["consul"] = svc
        self._tbl["services"] = idx
        self._svc_idx["consul"] = idx

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Serve on host:port (0 = a free port); returns "host:port"."""
        if self._server is not None:
            return self.address
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        self._server = server
        self.port = server.server_address[1]
        self.address = f"{self.host}:{self.port}"
        serve = lambda: server.serve_forever(poll_interval=0.05)  # noqa: E731 - a prompt shutdown()
        for target, name in ((serve, "http"), (self._ticker, "ticker")):
            t = threading.Thread(target=target, name=f"fake-consul-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self.address

    def stop(self) -> None:
        """End every blocked query at once (its connection drops unanswered, as when an agent goes
        away), close the listener and all connections, and join the threads."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
        server = self._server
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._cond:
            conns = dict(self._conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(conns.values()) + self._threads:
            t.join(timeout=5)

    def __enter__(self) -> "FakeConsul":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def index(self) -> int:
        """The current Raft-like index (the last write's)."""
        with self._cond:
            return self._index

    def _track(self, sock, add: bool) -> None:
        with self._cond:
            if add:
                self._conns[sock] = threading.current_thread()
            else:
                self._conns.pop(sock, None)

    # ------------------------------------------------------------------ index bookkeeping

    def _bump(self) -> int:
        self._index += 1
        return self._index

    def _catalog_max(self, checks: bool) -> int:
        idx = max(self._tbl["nodes"], self._tbl["services"])
        return max(idx, self._tbl["checks"]) if checks else idx

    def _instances(self, name: str) -> list[_Svc]:
        out = [s for s in self._services.values() if s.name == name]
        out += [s for s in self._builtin.values() if s.name == name]
        return sorted(out, key=lambda s: s.id)

    def _service_index(self, name: str, exists: bool, checks: bool) -> int:
        if not exists and self._svc_extinct:
            return self._svc_extinct
        if name in self._svc_idx:
            return self._svc_idx[name]
        return self._catalog_max(checks)

    def _service_gone(self, name: str, idx: int) -> None:
        if self._instances(name):
            self._svc_idx[name] = idx
        else:
            self._svc_idx.pop(name, None)
            self._svc_extinct = idx

    def _touch_all_services(self, idx: int) -> None:
        for name in {s.name for s in self._services.values()} | set(self._builtin):
            self._svc_idx[name] = idx

    # ------------------------------------------------------------------ checks and timers

    def _sync_check(self, c: _Chk) -> None:
        """Anti-entropy for one check: write the agent's view to the catalog if it differs."""
        c.defer_at = None
        if c.cat_status == c.status and c.cat_output == c.output:
            return
        idx = self._bump()
        c.cat_status, c.cat_output, c.modify_index = c.status, c.output, idx
        self._tbl["checks"] = idx
        if c.service_id:
            if c.service_id in self._services:
                self._svc_idx[c.service_name] = idx
        else:
            self._touch_all_services(idx)
        self._cond.notify_all()

    def _update_check(self, c: _Chk, status: str, output: str, now: float) -> None:
        """agent/local State.UpdateCheck."""
        if status == CRITICAL:
            if c.critical_since is None:
                c.critical_since = now
        else:
            c.critical_since = None
        if c.status == status and c.output == output:
            return
        if self.check_update_interval > 0 and c.status == status:
            c.output = output
            if c.defer_at is None:
                d = self.check_update_interval
                c.defer_at = now + d / 2 + random.random() * d
            self._cond.notify_all()   # the ticker has a new deadline
            return
        c.status, c.output = status, output
        self._sync_check(c)

    def _set_ttl_status(self, c: _Chk, status: str, output: str) -> None:
        """agent/checks CheckTTL.SetStatus: truncate, update, remember output, restart the TTL."""
        total = len(output.encode())
        if total > c.output_max:
            output = f"{output.encode()[:c.output_max].decode(errors='ignore')} ... (captured {c.output_max} of {total} bytes)"
        now = time.monotonic()
        self._update_check(c, status, output, now)
        c.last_output = output
        c.ttl_deadline = now + c.ttl
        self._cond.notify_all()

    def _ticker(self) -> None:
        """TTL expiry, deferred check syncs and the critical-service reaper; waits on the condition."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                for c in list(self._checks.values()):
                    if self._checks.get(c.id) is not c:
                        continue
                    if c.ttl_deadline is not None and now >= c.ttl_deadline:
                        c.ttl_deadline = None        # a Go timer fires once
                        out = "TTL expired"
                        if c.last_output:
                            out = f"TTL expired (last output before timeout follows): {c.last_output}"
                        self._update_check(c, CRITICAL, out, now)
                    if c.defer_at is not None and now >= c.defer_at:
                        self._sync_check(c)
                if now >= self._next_reap:
                    self._next_reap = now + max(self.check_reap_interval, 0.01)
                    self._reap(now)
                deadlines = [self._next_reap]
                for c in self._checks.values():
                    deadlines += [d for d in (c.ttl_deadline, c.defer_at) if d is not None]
                self._cond.wait(max(0.0, min(deadlines) - time.monotonic()))

    def _reap(self, now: float) -> None:
        reaped = set()
        for c in list(self._checks.values()):
            if not c.service_id or c.service_id in reaped or c.critical_since is None:
                continue
            if c.reap_after > 0 and now - c.critical_since > c.reap_after:
                reaped.add(c.service_id)
                self._deregister(c.service_id)

    def _deregister(self, sid: str) -> bool:
        svc = self._services.pop(sid, None)
        if svc is None:
            return False
        had_checks = False
        for cid in [cid for cid, c in self._checks.items() if c.service_id == sid]:
            del self._checks[cid]
            had_checks = True
        idx = self._bump()
        self._tbl["services"] = idx
        if had_checks:
            self._tbl["checks"] = idx
        self._service_gone(svc.name, idx)
        self._cond.notify_all()
        return True

    # ------------------------------------------------------------------ request handling

    def _handle(self, method: str, raw_target: str, body: bytes) -> _Resp | None:
        if self._stopping:
            return None
        split = urlsplit(raw_target)
        path = unquote(split.path)
        clean = _go_clean_path(path)
        if clean != path:
            loc = quote(clean, safe="/:@!$&'()*+,;=-._~") + (f"?{split.query}" if split.query else "")
            return _Resp(301, b"", [("Location", loc)])
        route = _EXACT.get(path)
        rest = ""
        if route is None:
            for prefix, methods, handler in _SUBTREES:
                if path.startswith(prefix):
                    route, rest = (methods, handler), path[len(prefix):]
                    break
        if route is None:
            if path + "/" in {p for p, _, _ in _SUBTREES}:
                return _Resp(301, b"", [("Location", quote(path + "/", safe="/"))])
            return _Resp(404)
        methods, handler = route
        allow = ",".join(("OPTIONS",) + methods)
        if method == "OPTIONS":
            return _Resp(200, b"", [("Allow", allow)])
        if method not in methods:
            r = _text_resp(405, f"method {method} not allowed")
            r.headers.append(("Allow", allow))
            return r
        q = parse_qs(split.query, keep_blank_values=True)
        try:
            dc = q.get("dc", [""])[0]
            if dc and dc != self.datacenter:
                raise _HTTPError(500, "No path to datacenter")
            for unsupported in ("filter", "peer"):
                if q.get(unsupported, [""])[0]:
                    raise _HTTPError(400, f"FakeConsul does not implement ?{unsupported}")
            return getattr(self, handler)(method, rest, q, body)
        except _HTTPError as e:
            r = _text_resp(e.code, e.reason) if e.reason else _Resp(e.code)
            r.headers += e.headers
            return r
        except _Abort:
            return None
        except Exception as e:  # a bug in the fake: say so loudly
            return _text_resp(500, f"FakeConsul internal error: {type(e).__name__}: {e}")

    @staticmethod
    def _pretty(q) -> bool:
        return "pretty" in q

    def _consistency(self, q) -> str:
        if "stale" in q and "consistent" in q:
            raise _HTTPError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        return "consistent" if "consistent" in q else "stale" if "stale" in q else "leader"

    def _blocking(self, q, compute) -> _Resp:
        """A blocking query: compute() -> (index, response) runs under the lock."""
        consistency = self._consistency(q)
        min_index = 0
        wait = self.default_query_time
        raw_wait = q.get("wait", [""])[0]
        if raw_wait:
            try:
                wait = parse_go_duration(raw_wait)
            except ValueError:
                raise _HTTPError(400, "Invalid wait time") from None
        raw_index = q.get("index", [""])[0]
        if raw_index:
            if not re.fullmatch(r"\d+", raw_index) or int(raw_index) >= 2 ** 64:
                raise _HTTPError(400, "Invalid index")
            min_index = int(raw_index)
        if wait > self.max_query_time:
            wait = self.max_query_time
        elif wait <= 0:
            wait = self.default_query_time
        wait += random.uniform(0, wait / 16)      # Consul's jitter: up to wait/16
        with self._cond:
            idx, resp = compute()
            if min_index > 0:
                deadline = time.monotonic() + wait
                while max(idx, 1) <= min_index and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                    idx, resp = compute()
            if self._stopping:
                raise _Abort
        resp.headers += [("X-Consul-Effective-Consistency", consistency),
                         ("X-Consul-Index", str(max(idx, 1))),
                         ("X-Consul-Knownleader", "true"),
                         ("X-Consul-Lastcontact", "0"),
                         ("X-Consul-Query-Backend", "blocking-query")]
        return resp

    # ------------------------------------------------------------------ KV

    def _kv_list_index(self, prefix: str, entries) -> int:
        lindex = max((e.modify_index for e in entries), default=0)
        if prefix:
            lindex = max([lindex] + [i for k, i in self._tomb.items() if k.startswith(prefix)])
        else:
            lindex = self._kv_index
        return lindex or self._kv_index

    def _h_kv(self, method, key, q, body):
        if method == "GET":
            return self._kv_get(key, q)
        if method == "PUT":
            return self._kv_put(key, q, body)
        return self._kv_delete(key, q)

    def _kv_get(self, key, q):
        pretty = self._pretty(q)
        if "keys" in q:
            sep = q.get("separator", q.get("seperator", [""]))[0]

            def compute():
                entries = [self._kv[k] for k in sorted(self._kv) if k.startswith(key)]
                keys, prev = [], None
                for e in entries:
                    if not sep:
                        keys.append(e.key)
                        continue
                    pos = e.key.find(sep, len(key))
                    if pos > -1:
                        k = e.key[:pos + len(sep)]
                        if k != prev:
                            keys.append(k)
                            prev = k
                    else:
                        keys.append(e.key)
                idx = self._kv_list_index(key, entries)
                if not keys and key:
                    return idx, _Resp(404)
                return idx, _json_resp(keys, pretty=pretty)
            return self._blocking(q, compute)
        if "recurse" in q:
            def compute():
                entries = [self._kv[k] for k in sorted(self._kv) if k.startswith(key)]
                idx = self._kv_list_index(key, entries)
                if not entries:
                    return idx, _Resp(404)
                return idx, _json_resp([e.json() for e in entries], pretty=pretty)
            return self._blocking(q, compute)
        if not key:
            raise _HTTPError(400, "Missing key name")
        raw = "raw" in q

        def compute():
            e = self._kv.get(key)
            if e is None:
                return self._kv_index, _Resp(404)
            if raw:
                return e.modify_index, _Resp(200, e.value or b"", [
                    ("Content-Type", "text/plain"), ("X-Content-Type-Options", "nosniff"),
                    ("Content-Security-Policy", "sandbox")])
            return e.modify_index, _json_resp([e.json()], pretty=pretty)
        return self._blocking(q, compute)

    @staticmethod
    def _conflicting(q, *flags):
        if sum(1 for f in flags if f in q) > 1:
            enc = "&".join(f"{k}={quote(v, safe='')}" for k in sorted(q) for v in q[k])
            raise _HTTPError(400, f"Conflicting flags: {enc}\n")

    def _kv_put(self, key, q, body):
        if not key:
            raise _HTTPError(400, "Missing key name")
        self._conflicting(q, "cas", "acquire", "release")
        flags = _parse_uint(q["flags"][0], "flags") if "flags" in q else 0
        cas = _parse_uint(q["cas"][0], "cas") if "cas" in q else None
        if len(body) > self.kv_max_value_size:
            raise _HTTPError(413, f"Request body({len(body)} bytes) too large, max size: "
                                  f"{self.kv_max_value_size} bytes. See "
                                  "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size")
        value = body if body else None
        with self._cond:
            if "acquire" in q:       # sessions are not implemented, so no session is valid
                raise _HTTPError(500, f'invalid session "{q["acquire"][0]}"')
            if "release" in q:       # ... and no session holds a lock
                return _json_resp(False)
            idx = self._index + 1
            if cas is None:
                ok, changed = True, self._op_set(self._kv, idx, key, value, flags)
            else:
                ok, changed = self._op_cas(self._kv, idx, key, value, flags, cas)
            self._commit_kv(changed, idx)
        return _json_resp(ok)

    def _kv_delete(self, key, q):
        self._conflicting(q, "recurse", "cas")
        recurse = "recurse" in q
        if not recurse and not key:
            raise _HTTPError(400, "Missing key name")
        cas = _parse_uint(q["cas"][0], "cas") if "cas" in q else None
        with self._cond:
            idx = self._index + 1
            if recurse:
                ok, changed = True, self._op_delete_tree(self._kv, self._tomb, idx, key)
            elif cas is not None:
                ok, changed = self._op_delete_cas(self._kv, self._tomb, idx, key, cas)
            else:
                ok, changed = True, self._op_delete(self._kv, self._tomb, idx, key)
            self._commit_kv(changed, idx)
        return _json_resp(ok)

    def _commit_kv(self, changed: bool, idx: int) -> None:
        if changed:
            assert idx == self._index + 1
            self._index = idx
            self._kv_index = idx
            self._cond.notify_all()

    # primitives of state/kvs.go; each works on a (copy of the) table and returns whether it changed it

    @staticmethod
    def _op_set(kv, idx, key, value, flags) -> bool:
        ex = kv.get(key)
        if ex is not None and (ex.value or b"") == (value or b"") and ex.flags == flags:
            return False                          # kvsSetTxn: an equal entry is not rewritten
        kv[key] = _Entry(key, value, flags, ex.create_index if ex else idx, idx)
        return True

    @classmethod
    def _op_cas(cls, kv, idx, key, value, flags, cas):
        ex = kv.get(key)
        if (cas == 0 and ex is not None) or (cas != 0 and ex is None):
            return False, False
        if ex is not None and cas != ex.modify_index:
            return False, False
        return True, cls._op_set(kv, idx, key, value, flags)

    @staticmethod
    def _op_delete(kv, tomb, idx, key) -> bool:
        if key not in kv:
            return False
        del kv[key]
        tomb[key] = idx
        return True

    @classmethod
    def _op_delete_cas(cls, kv, tomb, idx, key, cas):
        ex = kv.get(key)
        if ex is None:
            return True, False                    # kvsDeleteCASTxn answers true for a missing key
        if ex.modify_index != cas:
            return False, False
        return True, cls._op_delete(kv, tomb, idx, key)

    @staticmethod
    def _op_delete_tree(kv, tomb, idx, prefix) -> bool:
        doomed = [k for k in kv if k.startswith(prefix)]
        for k in doomed:
            del kv[k]
            tomb[k] = idx
        return bool(doomed)

    # ------------------------------------------------------------------ transactions

    def _h_txn(self, method, rest, q, body):
        if len(body) > self.kv_max_value_size:
            raise _HTTPError(413, f"Request body too large, max size: {self.kv_max_value_size} bytes")
        try:
            raw_ops = json.loads(body or b"null")
        except ValueError as e:
            raise _HTTPError(400, f"Failed to parse body: {e}") from None
        if raw_ops is None:
            raw_ops = []
        if not isinstance(raw_ops, list):
            raise _HTTPError(400, "Failed to parse body: json: cannot unmarshal into Go value of type api.TxnOps")
        if len(raw_ops) > MAX_TXN_OPS:
            raise _HTTPError(413, f"Transaction contains too many operations ({len(raw_ops)} > {MAX_TXN_OPS})")
        ops, writes = [], 0
        for raw in raw_ops:
            op = _CI(raw)
            if op.get("Node", "Service", "Check", "Session") is not None:
                raise _HTTPError(400, "FakeConsul implements only KV operations in /v1/txn")
            kv = op.get("KV")
            if kv is None:
                continue
            kv = _CI(kv)
            value = kv.get("Value")
            if value is not None:
                if not isinstance(value, str):
                    raise _HTTPError(400, f"Failed to parse body: unexpected value type: {type(value).__name__}")
                try:
                    value = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError) as e:
                    raise _HTTPError(400, f"Failed to parse body: failed to decode value: {e}") from None
                if len(value) > self.kv_max_value_size:
                    raise _HTTPError(413, f"Value for key {kv.get('Key', default='')!r} is too large "
                                          f"({len(value)} > {self.kv_max_value_size} bytes)")
            verb = kv.get("Verb", default="")
            if verb in ("set", "delete", "delete-cas", "delete-tree", "cas", "lock", "unlock"):
                writes += 1
            ops.append((verb, kv.get("Key", default=""), value, int(kv.get("Flags", default=0)),
                        int(kv.get("Index", default=0)), kv.get("Session", default="")))
        with self._cond:
            kvcopy, tomb = dict(self._kv), dict(self._tomb)
            idx = self._index + 1
            results, errors, changed = [], [], False
            for i, op in enumerate(ops):
                try:
                    res, ch = self._txn_op(kvcopy, tomb, idx, *op)
                except _TxnError as e:
                    errors.append({"OpIndex": i, "What": str(e)})
                    continue
                results += res
                changed |= ch
            if errors:
                resp = _json_resp({"Results": None, "Errors": errors}, code=409, pretty=self._pretty(q))
            else:
                if changed:
                    self._kv, self._tomb = kvcopy, tomb
                    self._commit_kv(True, idx)
                resp = _json_resp({"Results": results, "Errors": None}, pretty=self._pretty(q))
        if writes == 0:
            self._consistency(q)
            resp.headers += [("X-Consul-Knownleader", "true"), ("X-Consul-Lastcontact", "0")]
        return resp

    def _txn_op(self, kv, tomb, idx, verb, key, value, flags, index, session):
        def meta(e):   # results of non-get verbs carry no value
            return [{"KV": e.json(with_value=False)}]
        if verb == "set":
            self._op_set(kv, idx, key, value, flags)
            return meta(kv[key]), kv[key].modify_index == idx
        if verb == "cas":
            ok, ch = self._op_cas(kv, idx, key, value, flags, index)
            if not ok:
                raise _TxnError(f'failed to set key "{key}", index is stale')
            return meta(kv[key]), ch
        if verb == "lock":
            raise _TxnError("missing session" if not session else f'invalid session "{session}"')
        if verb == "unlock":
            if not session:
                raise _TxnError("missing session")
            raise _TxnError(f'failed to unlock key "{key}", lock isn\'t held, or is held by another session')
        if verb == "get":
            e = kv.get(key)
            if e is None:
                raise _TxnError(f'key "{key}" doesn\'t exist')
            return [{"KV": e.json()}], False
        if verb == "get-or-empty":
            e = kv.get(key)
            if e is None:
                return [{"KV": {"LockIndex": 0, "Key": key, "Flags": flags, "Value": None,
                                "CreateIndex": 0, "ModifyIndex": index}}], False
            return [{"KV": e.json()}], False
        if verb == "get-tree":
            return [{"KV": kv[k].json()} for k in sorted(kv) if k.startswith(key)], False
        if verb == "check-index":
            e = kv.get(key)
            if e is None:
                raise _TxnError(f'failed to check index, key "{key}" doesn\'t exist')
            if e.modify_index != index:
                raise _TxnError(f'failed index check for key "{key}", current modify index '
                                f"{e.modify_index} != {index}")
            return meta(e), False
        if verb == "check-session":
            e = kv.get(key)
            if e is None:
                raise _TxnError(f'failed to check session, key "{key}" doesn\'t exist')
            if session != "":
                raise _TxnError(f'failed session check for key "{key}", current session "" != "{session}"')
            return meta(e), False
        if verb == "check-not-exists":
            if key in kv:
                raise _TxnError(f'key "{key}" exists')
            return [], False
        if verb == "delete":
            return [], self._op_delete(kv, tomb, idx, key)
        if verb == "delete-cas":
            ok, ch = self._op_delete_cas(kv, tomb, idx, key, index)
            if not ok:
                raise _TxnError(f'failed to delete key "{key}", index is stale')
            return [], ch
        if verb == "delete-tree":
            return [], self._op_delete_tree(kv, tomb, idx, key)
        raise _TxnError(f'unknown KV verb "{verb}"')

    # ------------------------------------------------------------------ agent: services

    def _parse_check_def(self, raw, what: str) -> dict:
        c = _CI(raw)
        for kind in ("HTTP", "TCP", "UDP", "GRPC", "H2PING", "Args", "ScriptArgs", "Script",
                     "DockerContainerID", "AliasNode", "AliasService", "OSService"):
            if c.has(kind):
                raise _HTTPError(400, f"FakeConsul implements only TTL checks ({what} has {kind})")
        status = c.get("Status", default="")
        if status and status not in VALID_STATUSES:
            raise _HTTPError(400, "Status for checks must 'passing', 'warning', 'critical'")
        ttl = _duration_field(c.get("TTL"), "TTL")
        if c.has("Interval") and ttl > 0:
            raise _HTTPError(400, "Invalid check: Interval and TTL cannot both be specified")
        if ttl <= 0:
            raise _HTTPError(400, "Invalid check: TTL must be > 0 for TTL checks")
        dcsa = _duration_field(c.get("DeregisterCriticalServiceAfter"), "DeregisterCriticalServiceAfter")
        return {"check_id": str(c.get("CheckID", default="")), "name": str(c.get("Name", default="")),
                "notes": str(c.get("Notes", default="")), "status": status, "ttl": ttl,
                "reap_after": max(dcsa, self.check_deregister_interval_min) if dcsa > 0 else 0.0,
                "output_max": int(c.get("OutputMaxSize", default=0)) or OUTPUT_MAX_SIZE}

    def _h_agent_service_register(self, method, rest, q, body):
        try:
            raw = json.loads(body or b"null")
        except ValueError as e:
            raise _HTTPError(400, f"Request decode failed: {e}") from None
        if not isinstance(raw, dict):
            raise _HTTPError(400, "Request decode failed: expected a JSON object")
        d = _CI(raw)
        name = str(d.get("Name", default=""))
        if not name:
            raise _HTTPError(400, "Missing service name")
        if d.get("Kind", default=""):
            raise _HTTPError(400, "FakeConsul does not implement Connect/gateway service kinds")
        address = str(d.get("Address", default=""))
        if address in ("0.0.0.0", "::", "[::]", "0:0:0:0:0:0:0:0"):
            raise _HTTPError(400, "Invalid service address")
        tags = d.get("Tags", default=[])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _HTTPError(400, "Request decode failed: Tags must be a list of strings")
        meta = d.get("Meta")
        if meta is not None and (not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())):
            raise _HTTPError(400, "Request decode failed: Meta must map strings to strings")
        weights = _CI(d.get("Weights", default={}))
        passing = int(weights.get("Passing", default=0)) or 1
        port = d.get("Port", default=0)
        if not isinstance(port, int) or isinstance(port, bool):
            raise _HTTPError(400, "Request decode failed: Port must be an integer")
        tagged = {}
        for k, v in (d.get("TaggedAddresses", default={}) or {}).items():
            v = _CI(v)
            tagged[k] = {"Address": v.get("Address", default=""), "Port": v.get("Port", default=0)}
        if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", address):
            tagged.setdefault("lan_ipv4", {"Address": address, "Port": port})
            tagged.setdefault("wan_ipv4", {"Address": address, "Port": port})
        sid = str(d.get("ID", default="")) or name
        svc = _Svc(sid, name, list(tags), address, port, meta,
                   {"Passing": passing, "Warning": int(weights.get("Warning", default=1 if not d.has("Weights") else 0))},
                   bool(d.get("EnableTagOverride", default=False)), tagged)
        defs = []
        single = d.get("Check")
        if single and _CI(single).raw:
            defs.append(self._parse_check_def(single, "Check"))
        for i, raw_check in enumerate(d.get("Checks", default=[]) or []):
            defs.append(self._parse_check_def(raw_check, f"Checks[{i}]"))
        replace = "replace-existing-checks" in q
        with self._cond:
            self._register(svc, defs, replace)
        return _Resp(200)

    def _register(self, new: _Svc, defs: list[dict], replace: bool) -> None:
        now = time.monotonic()
        old = self._services.get(new.id)
        built = []
        for i, cd in enumerate(defs):
            cid = cd["check_id"] or f"service:{new.id}" + (f":{i + 1}" if len(defs) > 1 else "")
            prev = self._checks.get(cid)
            c = _Chk(cid, cd["name"] or f"Service '{new.name}' check", cd["notes"], new.id, new.name,
                     list(new.tags), cd["ttl"], cd["reap_after"], cd["output_max"],
                     cd["status"] or CRITICAL, "")
            if prev is not None:                  # the check-state snapshot survives re-registration
                c.status, c.output = prev.status, prev.output
            c.ttl_deadline = now + c.ttl
            built.append((c, prev))
        new_ids = {c.id for c, _ in built}
        removed = [cid for cid, c in self._checks.items()
                   if replace and c.service_id == new.id and cid not in new_ids]
        svc_changed = old is None or old.sig() != new.sig()
        checks_changed = [c for c, prev in built
                          if prev is None or prev.cat_status is None or prev.cat_sig() != c.sig(c.status, c.output)]
        idx = self._bump() if (svc_changed or checks_changed or removed) else None
        new.create_index = old.create_index if old else idx
        new.modify_index = idx if svc_changed else old.modify_index
        for c, prev in built:
            if prev is not None and prev.cat_status is not None:
                c.create_index = prev.create_index
            else:
                c.create_index = idx
            if c in checks_changed:
                c.modify_index = idx
            else:
                c.modify_index = prev.modify_index
            c.cat_status, c.cat_output = c.status, c.output
        self._services[new.id] = new
        for cid in removed:
            del self._checks[cid]
        for c, _ in built:
            self._checks[c.id] = c
        if idx is not None:
            if svc_changed:
                self._tbl["services"] = idx
            if checks_changed or removed:
                self._tbl["checks"] = idx
            self._svc_idx[new.name] = idx
            if old is not None and old.name != new.name:
                self._service_gone(old.name, idx)
        self._cond.notify_all()

    def _h_agent_service_deregister(self, method, sid, q, body):
        with self._cond:
            if not self._deregister(sid):
                raise _HTTPError(404, f'Unknown service ID "{sid}". Ensure that the service ID is passed, '
                                      "not the service name.")
        return _Resp(200)

    def _agent_service_json(self, s: _Svc) -> dict:
        out = {"ID": s.id, "Service": s.name, "Tags": list(s.tags), "Meta": dict(s.meta or {}),
               "Port": s.port, "Address": s.address}
        if s.tagged:
            out["TaggedAddresses"] = s.tagged
        out.update({"Weights": s.weights, "EnableTagOverride": s.eto, "Datacenter": self.datacenter})
        return out

    def _h_agent_services(self, method, rest, q, body):
        with self._cond:
            out = {sid: self._agent_service_json(self._services[sid]) for sid in sorted(self._services)}
        return _json_resp(out, pretty=self._pretty(q))

    def _h_agent_service_get(self, method, sid, q, body):
        if q.get("hash", [""])[0]:
            raise _HTTPError(400, "FakeConsul does not implement hash-based blocking")
        with self._cond:
            s = self._services.get(sid)
            if s is None:
                raise _HTTPError(404, f"unknown service ID: {sid}")
            out = self._agent_service_json(s)
        out["ContentHash"] = format(abs(hash(json.dumps(out, sort_keys=True))), "016x")[:16]
        r = _json_resp(out, pretty=self._pretty(q))
        r.headers.append(("X-Consul-Contenthash", out["ContentHash"]))
        return r

    # ------------------------------------------------------------------ agent: checks

    def _h_agent_check_register(self, method, rest, q, body):
        try:
            raw = json.loads(body or b"null")
        except ValueError as e:
            raise _HTTPError(400, f"Request decode failed: {e}") from None
        d = _CI(raw)
        name = str(d.get("Name", default=""))
        if not name:
            raise _HTTPError(400, "Missing check name")
        status = d.get("Status", default="")
        if status and status not in VALID_STATUSES:
            raise _HTTPError(400, "Bad check status")
        cd = self._parse_check_def(raw, "check")
        cid = str(d.get("ID", "CheckID", default="")) or name
        sid = str(d.get("ServiceID", default=""))
        with self._cond:
            svc = None
            if sid:
                svc = self._services.get(sid)
                if svc is None:
                    raise _HTTPError(404, f'ServiceID "{sid}" does not exist')
            prev = self._checks.get(cid)
            c = _Chk(cid, name, cd["notes"], sid, svc.name if svc else "", list(svc.tags) if svc else [],
                     cd["ttl"], cd["reap_after"], cd["output_max"], status or CRITICAL, "")
            c.ttl_deadline = time.monotonic() + c.ttl
            if prev is not None and prev.cat_status is not None and prev.cat_sig() == c.sig(c.status, c.output):
                c.create_index, c.modify_index = prev.create_index, prev.modify_index
                c.cat_status, c.cat_output = c.status, c.output
                self._checks[cid] = c
            else:
                self._checks[cid] = c
                idx = self._bump()
                c.create_index = prev.create_index if prev is not None and prev.create_index else idx
                c.modify_index = idx
                c.cat_status, c.cat_output = c.status, c.output
                self._tbl["checks"] = idx
                if svc is not None:
                    self._svc_idx[svc.name] = idx
                else:
                    self._touch_all_services(idx)
            self._cond.notify_all()
        return _Resp(200)

    def _h_agent_check_deregister(self, method, cid, q, body):
        with self._cond:
            c = self._checks.pop(cid, None)
            if c is None:
                raise _HTTPError(404, f'Unknown check ID "{cid}". Ensure that the check ID is passed, '
                                      "not the check name.")
            idx = self._bump()
            self._tbl["checks"] = idx
            if c.service_id:
                if c.service_id in self._services:
                    self._svc_idx[c.service_name] = idx
            else:
                self._touch_all_services(idx)
            self._cond.notify_all()
        return _Resp(200)

    def _ttl_update(self, cid, status, output):
        with self._cond:
            c = self._checks.get(cid)
            if c is None:
                raise _HTTPError(404, f'Unknown check ID "{cid}". Ensure that the check ID is passed, '
                                      "not the check name.")
            if not c.ttl:
                raise _HTTPError(500, f'CheckID "{cid}" does not have associated TTL')
            self._set_ttl_status(c, status, output)
        return _Resp(200)

    def _h_agent_check_pass(self, method, cid, q, body):
        return self._ttl_update(cid, PASSING, q.get("note", [""])[0])

    def _h_agent_check_warn(self, method, cid, q, body):
        return self._ttl_update(cid, WARNING, q.get("note", [""])[0])

    def _h_agent_check_fail(self, method, cid, q, body):
        return self._ttl_update(cid, CRITICAL, q.get("note", [""])[0])

    def _h_agent_check_update(self, method, cid, q, body):
        try:
            d = _CI(json.loads(body or b"null"))
        except ValueError as e:
            raise _HTTPError(400, f"Request decode failed: {e}") from None
        status = d.get("Status", default="")
        if status not in VALID_STATUSES:
            raise _HTTPError(400, f"Invalid check status: '{status}'")
        return self._ttl_update(cid, status, str(d.get("Output", default="")))

    def _check_json(self, c: _Chk, catalog: bool = True) -> dict:
        return {"Node": self.node_name, "CheckID": c.id, "Name": c.name,
                "Status": c.cat_status if catalog else c.status, "Notes": c.notes,
                "Output": c.cat_output if catalog else c.output,
                "ServiceID": c.service_id, "ServiceName": c.service_name,
                "ServiceTags": list(c.service_tags), "Type": "ttl", "Interval": "", "Timeout": "",
                "ExposedPort": 0, "Definition": {},
                "CreateIndex": c.create_index if catalog else 0,
                "ModifyIndex": c.modify_index if catalog else 0}

    def _serf_json(self) -> dict:
        return {"Node": self.node_name, "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": PASSING, "Notes": "", "Output": "Agent alive and reachable",
                "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "",
                "Timeout": "", "ExposedPort": 0, "Definition": {},
                "CreateIndex": self._node_index, "ModifyIndex": self._node_index}

    def _node_checks(self) -> list[dict]:
        return [self._serf_json()] + [self._check_json(self._checks[cid]) for cid in sorted(self._checks)
                                      if not self._checks[cid].service_id]

    def _service_checks(self, sid: str) -> list[dict]:
        return [self._check_json(self._checks[cid]) for cid in sorted(self._checks)
                if self._checks[cid].service_id == sid]

    def _h_agent_checks(self, method, rest, q, body):
        with self._cond:
            out = {cid: self._check_json(self._checks[cid], catalog=False) for cid in sorted(self._checks)}
        return _json_resp(out, pretty=self._pretty(q))

    def _h_agent_self(self, method, rest, q, body):
        cfg = {"Datacenter": self.datacenter, "PrimaryDatacenter": self.datacenter,
               "NodeName": self.node_name, "NodeID": self.node_id, "Revision": "fake",
               "Server": True, "Version": CONSUL_VERSION, "BuildDate": "1970-01-01T00:00:00Z"}
        member = {"Name": self.node_name, "Addr": self.node_address, "Port": 8301,
                  "Tags": {"dc": self.datacenter, "role": "consul", "build": CONSUL_VERSION,
                           "id": self.node_id, "port": "8300"},
                  "Status": 1}
        return _json_resp({"Config": cfg, "Coord": None, "Member": member, "Stats": {},
                           "Meta": {"consul-network-segment": ""}}, pretty=self._pretty(q))

    # ------------------------------------------------------------------ catalog and health

    def _node_tagged(self) -> dict:
        a = self.node_address
        return {"lan": a, "lan_ipv4": a, "wan": a, "wan_ipv4": a}

    def _node_json(self) -> dict:
        return {"ID": self.node_id, "Node": self.node_name, "Address": self.node_address,
                "Datacenter": self.datacenter, "TaggedAddresses": self._node_tagged(),
                "Meta": {"consul-network-segment": ""},
                "CreateIndex": self._node_index, "ModifyIndex": self._node_index}

    @staticmethod
    def _node_meta_ok(q) -> bool:
        for pair in q.get("node-meta", []):
            k, _, v = pair.partition(":")
            if not ({"consul-network-segment": ""}.get(k) == v):
                return False
        return True

    @staticmethod
    def _tags_ok(s: _Svc, tags: list[str]) -> bool:
        have = {t.lower() for t in s.tags}
        return all(t.lower() in have for t in tags)

    def _health_service_json(self, s: _Svc) -> dict:
        out = {"ID": s.id, "Service": s.name, "Tags": list(s.tags), "Address": s.address}
        if s.tagged:
            out["TaggedAddresses"] = s.tagged
        out.update({"Meta": s.meta, "Port": s.port, "Weights": s.weights, "EnableTagOverride": s.eto,
                    "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "Connect": {},
                    "CreateIndex": s.create_index, "ModifyIndex": s.modify_index})
        return out

    def _catalog_service_json(self, s: _Svc) -> dict:
        out = {"ID": self.node_id, "Node": self.node_name, "Address": self.node_address,
               "Datacenter": self.datacenter, "TaggedAddresses": self._node_tagged(),
               "NodeMeta": {"consul-network-segment": ""}, "ServiceKind": "", "ServiceID": s.id,
               "ServiceName": s.name, "ServiceTags": list(s.tags), "ServiceAddress": s.address}
        if s.tagged:
            out["ServiceTaggedAddresses"] = s.tagged
        out.update({"ServiceWeights": s.weights, "ServiceMeta": s.meta, "ServicePort": s.port,
                    "ServiceSocketPath": "", "ServiceEnableTagOverride": s.eto,
                    "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "ServiceConnect": {},
                    "CreateIndex": s.create_index, "ModifyIndex": s.modify_index})
        return out

    def _h_health_service(self, method, name, q, body):
        if not name:
            raise _HTTPError(400, "Missing service name")
        passing = False
        if "passing" in q:
            raw = q["passing"][0]
            try:
                passing = True if raw == "" else _parse_bool(raw)
            except ValueError:
                raise _HTTPError(400, "Invalid value for ?passing") from None
        tags = q.get("tag", [])
        meta_ok = self._node_meta_ok(q)
        pretty = self._pretty(q)

        def compute():
            insts = self._instances(name)
            idx = self._service_index(name, bool(insts), checks=True)
            out = []
            for s in insts:
                if not meta_ok or not self._tags_ok(s, tags):
                    continue
                checks = self._node_checks() + self._service_checks(s.id)
                if passing and any(c["Status"] != PASSING for c in checks):
                    continue
                out.append({"Node": self._node_json(), "Service": self._health_service_json(s),
                            "Checks": checks})
            return idx, _json_resp(out, pretty=pretty)
        return self._blocking(q, compute)

    def _h_health_checks(self, method, name, q, body):
        if not name:
            raise _HTTPError(400, "Missing service name")
        pretty = self._pretty(q)

        def compute():
            insts = self._instances(name)
            idx = self._service_index(name, bool(insts), checks=True)
            out = [] if not self._node_meta_ok(q) else \
                [c for s in insts for c in self._service_checks(s.id)]
            return idx, _json_resp(out, pretty=pretty)
        return self._blocking(q, compute)

    def _h_health_node(self, method, node, q, body):
        if not node:
            raise _HTTPError(400, "Missing node name")
        pretty = self._pretty(q)

        def compute():
            out = []
            if node in (self.node_name, self.node_id):
                out = self._node_checks() + [self._check_json(self._checks[cid])
                                             for cid in sorted(self._checks) if self._checks[cid].service_id]
            return self._tbl["checks"], _json_resp(out, pretty=pretty)
        return self._blocking(q, compute)

    def _h_health_state(self, method, state, q, body):
        if state not in ("any", PASSING, WARNING, CRITICAL):
            raise _HTTPError(400, "Bad check status")
        pretty = self._pretty(q)

        def compute():
            every = self._node_checks() + [self._check_json(self._checks[cid])
                                           for cid in sorted(self._checks) if self._checks[cid].service_id]
            out = [c for c in every if state == "any" or c["Status"] == state] if self._node_meta_ok(q) else []
            return self._tbl["checks"], _json_resp(out, pretty=pretty)
        return self._blocking(q, compute)

    def _h_catalog_service(self, method, name, q, body):
        if not name:
            raise _HTTPError(400, "Missing service name")
        tags = q.get("tag", [])
        pretty = self._pretty(q)

        def compute():
            insts = self._instances(name)
            idx = self._service_index(name, bool(insts), checks=False)
            out = [self._catalog_service_json(s) for s in insts
                   if self._node_meta_ok(q) and self._tags_ok(s, tags)]
            return idx, _json_resp(out, pretty=pretty)
        return self._blocking(q, compute)

    def _h_catalog_services(self, method, rest, q, body):
        pretty = self._pretty(q)

        def compute():
            out: dict[str, set] = {}
            if self._node_meta_ok(q):
                for s in list(self._services.values()) + list(self._builtin.values()):
                    out.setdefault(s.name, set()).update(s.tags)
            return self._catalog_max(checks=False), _json_resp(
                {name: sorted(out[name]) for name in sorted(out)}, pretty=pretty)
        return self._blocking(q, compute)

    def _h_catalog_nodes(self, method, rest, q, body):
        pretty = self._pretty(q)

        def compute():
            node = self._node_json()
            flat = {k: v for k, v in node.items()}
            return self._tbl["nodes"], _json_resp([flat] if self._node_meta_ok(q) else [], pretty=pretty)
        return self._blocking(q, compute)

    def _h_catalog_datacenters(self, method, rest, q, body):
        return _json_resp([self.datacenter], pretty=self._pretty(q))

    def _h_status_leader(self, method, rest, q, body):
        return _json_resp(f"{self.node_address}:8300", pretty=self._pretty(q))

    def _h_status_peers(self, method, rest, q, body):
        return _json_resp([f"{self.node_address}:8300"], pretty=self._pretty(q))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Run the FAKE Consul HTTP API (for tests; not Consul).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8500)
    args = ap.parse_args(argv)
    fake = FakeConsul(args.host, args.port)
    print(f"FAKE Consul (not Consul) listening on http://{fake.start()}  -- Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
