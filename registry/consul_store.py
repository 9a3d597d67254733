"""The Consul store, through Consul's HTTP API (py-consul). Layout (docs/registry.md):

    KV   PREFIX/versions/OWNER/NAME/VERSION   a VersionInfo as JSON (manifest, digest,
                                              published_at, private); written once, with
                                              CAS index 0 (create-only), so two racing
                                              publishers of one version have one winner
    KV   PREFIX/keys/ID                       an ApiKey as JSON (a salted hash, never the
                                              secret); created with CAS index 0, deleted on
                                              revocation
    catalog  service PREFIX (default "algomesh"), one entry per instance: ID = instance id, Address/Port =
             its sidecar, Tags ["algorithm=OWNER/NAME", "version=VERSION"], Meta with the
             same, and a TTL check "service:ID" the control plane's prober passes or fails
             (it goes critical by itself if the prober stops, and the entry is removed
             after DeregisterCriticalServiceAfter)

Change feeds are Consul blocking queries (``?index=N&wait=Ts``) on the KV prefix and on
the service's health; the index rules Consul documents are applied here: an index that
goes backwards resets the loop to 0, and one that is not positive becomes 1.
"""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import consul
import requests
from google.protobuf import json_format

from algomesh._errors import error
from algomesh.v1 import registry_pb2

from .store import CRITICAL, PASSING, WARNING, register_backend

DEREGISTER_CRITICAL_AFTER = "1m"


def _duration(seconds: float) -> str:
    """A Go duration, as Consul parses them: "1.5s", "300ms"."""
    return f"{max(1, round(seconds * 1000))}ms"


def _unreachable(exc: Exception):
    return error("REGISTRY_UNAVAILABLE", f"Consul did not answer: {type(exc).__name__}: {exc}")


class ConsulStore:
    def __init__(self, host: str, port: int, prefix: str = "algomesh", token: str | None = None) -> None:
        self.prefix = prefix.strip("/") or "algomesh"
        # One catalog service per registry (prefix): registries sharing an agent stay apart.
        self.service = self.prefix.replace("/", "-")
        self.address = f"{host}:{port}"
        self._c = consul.Consul(host=host, port=port, token=token)

    def _key(self, name: str, version: str = "") -> str:
        return f"{self.prefix}/versions/{name}/{version}" if version else f"{self.prefix}/versions/{name}/"

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (requests.RequestException, consul.ConsulException, OSError) as exc:
            raise _unreachable(exc) from None

    # versions ---------------------------------------------------------------------

    @staticmethod
    def _encode(info: registry_pb2.VersionInfo) -> str:
        return json_format.MessageToJson(info, indent=None, sort_keys=True)

    @staticmethod
    def _decode(value: bytes | str | None) -> registry_pb2.VersionInfo:
        return json_format.Parse(value or b"{}", registry_pb2.VersionInfo(), ignore_unknown_fields=True)

    def publish(self, info: registry_pb2.VersionInfo) -> bool:
        m = info.manifest
        key = self._key(m.name, m.version)
        if self._call(self._c.kv.put, key, self._encode(info), cas=0):
            return True
        _, entry = self._call(self._c.kv.get, key)
        existing = self._decode(entry["Value"]) if entry else None
        if existing is not None and existing.digest == info.digest:
            return False
        raise error(
            "VERSION_EXISTS",
            f"{m.name} {m.version} is already published with other content "
            f"(digest {existing.digest[:12] if existing else '?'}, yours {info.digest[:12]}); "
            "versions are immutable, bump the version",
            algorithm=m.name, version=m.version)

    def get_version(self, name: str, version: str) -> registry_pb2.VersionInfo | None:
        _, entry = self._call(self._c.kv.get, self._key(name, version))
        return self._decode(entry["Value"]) if entry else None

    def _all(self, prefix: str) -> list[registry_pb2.VersionInfo]:
        _, entries = self._call(self._c.kv.get, prefix, recurse=True)
        # KV has no publish order of its own: CreateIndex is the order Consul accepted them.
        entries = sorted(entries or [], key=lambda e: e["CreateIndex"])
        return [self._decode(e["Value"]) for e in entries if e.get("Value")]

    def versions(self, name: str) -> list[registry_pb2.VersionInfo]:
        return self._all(self._key(name))

    def all_versions(self) -> list[registry_pb2.VersionInfo]:
        return self._all(f"{self.prefix}/versions/")

    def algorithms(self) -> list[str]:
        _, keys = self._call(self._c.kv.get, f"{self.prefix}/versions/", keys=True)
        start = len(f"{self.prefix}/versions/")
        return sorted({"/".join(k[start:].split("/")[:2]) for k in keys or [] if k.count("/") >= 3})

    # instances --------------------------------------------------------------------

    def register_instance(self, instance: registry_pb2.Instance, ttl: float = 10.0) -> None:
        host, _, port = instance.address.rpartition(":")
        check = {"CheckID": f"service:{instance.id}", "Name": "algomesh sidecar health",
                 "TTL": _duration(ttl), "Status": PASSING,
                 "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER}
        meta = {"algorithm": instance.algorithm, "version": instance.version,
                "started_at": str(instance.started_at), "host": socket.gethostname(),
                "metrics": instance.metrics_address}  # Prometheus' Consul discovery can read it
        self._call(self._c.agent.service.register, self.service, service_id=instance.id, address=host,
                   port=int(port), tags=[f"algorithm={instance.algorithm}", f"version={instance.version}"],
                   meta=meta, check=check)
        # Consul keeps an existing check's status when a service is registered again.
        self.set_instance_state(instance.id, PASSING)

    def set_instance_state(self, instance_id: str, state: str) -> None:
        fn = {PASSING: self._c.agent.check.ttl_pass, WARNING: self._c.agent.check.ttl_warn,
              CRITICAL: self._c.agent.check.ttl_fail}[state]
        # False (404) when the instance was deregistered meanwhile: nothing left to update.
        self._call(fn, f"service:{instance_id}")

    def deregister_instance(self, instance_id: str) -> None:
        self._call(self._c.agent.service.deregister, instance_id)

    def _entries(self, name: str = "", index: int | None = None, wait: str | None = None):
        kwargs: dict = {}
        if name:
            kwargs["tag"] = f"algorithm={name}"
        if index is not None:
            kwargs.update(index=index, wait=wait)
        return self._call(self._c.health.service, self.service, **kwargs)

    def instances(self, name: str = "", version: str = "") -> list[registry_pb2.Instance]:
        _, entries = self._entries(name)
        out = []
        for e in entries or []:
            svc, statuses = e["Service"], {c.get("Status") for c in e.get("Checks", [])}
            meta = svc.get("Meta") or {}
            if version and meta.get("version") != version:
                continue
            state = CRITICAL if CRITICAL in statuses else WARNING if WARNING in statuses else PASSING
            address = svc.get("Address") or e.get("Node", {}).get("Address", "")
            out.append(registry_pb2.Instance(
                id=svc["ID"], algorithm=meta.get("algorithm", ""), version=meta.get("version", ""),
                address=f"{address}:{svc['Port']}", state=state, started_at=int(meta.get("started_at", 0)),
                metrics_address=meta.get("metrics", "")))
        return sorted(out, key=lambda i: (i.started_at, i.id))

    def clear_instances(self) -> None:
        """Deregister this registry's services that this host left on its agent (a previous run)."""
        services = self._call(self._c.agent.services) or {}
        for sid, svc in services.items():
            if svc.get("Service") == self.service and (svc.get("Meta") or {}).get("host") == socket.gethostname():
                self.deregister_instance(sid)

    # API keys ---------------------------------------------------------------------

    def add_key(self, key: registry_pb2.ApiKey) -> None:
        if not self._call(self._c.kv.put, f"{self.prefix}/keys/{key.id}",
                          json_format.MessageToJson(key, indent=None, sort_keys=True), cas=0):
            raise error("INTERNAL", f"an API key with id {key.id} exists already")

    def remove_key(self, key_id: str) -> bool:
        key = f"{self.prefix}/keys/{key_id}"
        _, entry = self._call(self._c.kv.get, key)
        if entry is None:
            return False
        self._call(self._c.kv.delete, key)
        return True

    def keys(self) -> list[registry_pb2.ApiKey]:
        _, entries = self._call(self._c.kv.get, f"{self.prefix}/keys/", recurse=True)
        entries = sorted(entries or [], key=lambda e: e["CreateIndex"])
        return [json_format.Parse(e["Value"], registry_pb2.ApiKey(), ignore_unknown_fields=True)
                for e in entries if e.get("Value")]

    # change feeds: Consul blocking queries ------------------------------------------

    @staticmethod
    def _next_index(previous: int, new: int | str | None) -> int:
        """Consul's rules for the index a blocking loop carries on with."""
        new = int(new or 0)
        if new < previous:
            return 0            # it went backwards: reset, restarting the blocking loop
        if new <= 0:
            return 1            # never block on 0: it would return at once, forever
        return new

    def wait_versions(self, index: int, timeout: float) -> int:
        new, _ = self._call(self._c.kv.get, f"{self.prefix}/versions/", recurse=True,
                            index=index or None, wait=_duration(timeout))
        return self._next_index(index, new)

    def wait_instances(self, index: int, timeout: float) -> int:
        new, _ = self._entries(index=index or None, wait=_duration(timeout))
        return self._next_index(index, new)

    def wait_keys(self, index: int, timeout: float) -> int:
        new, _ = self._call(self._c.kv.get, f"{self.prefix}/keys/", recurse=True,
                            index=index or None, wait=_duration(timeout))
        return self._next_index(index, new)

    def close(self) -> None:
        http = getattr(self._c, "http", None)
        session = getattr(http, "session", None)
        if session is not None:
            session.close()


@register_backend("consul")
def _from_url(url: str) -> ConsulStore:
    """consul://host:8500[/prefix]; the token comes from $CONSUL_HTTP_TOKEN."""
    parsed = urlparse(url)
    if not parsed.hostname:
        raise ValueError(f"consul URL needs a host: {url!r} (consul://127.0.0.1:8500)")
    return ConsulStore(parsed.hostname, parsed.port or 8500, parsed.path or "algomesh",
                       token=os.environ.get("CONSUL_HTTP_TOKEN"))
