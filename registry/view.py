"""The control plane's view of the store, kept fresh from the store's change feeds.

One watcher thread per feed (versions, instances, keys) loops on the store's blocking
``wait_*`` and refetches that half when its index moves, then hands it to the event
loop. Consul's documented client rules apply: a rate limit between queries, and on an
unreachable store a jittered, growing back-off while the last good view keeps serving
(``stale`` says why; it is logged once per outage and cleared on recovery).
Subscribers (the Watch RPC, the ingress) wait for the revision to move.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from typing import Callable

from algomesh.v1 import registry_pb2

from .store import PASSING, Store

log = logging.getLogger("algomesh.registry.view")


class RegistryView:
    def __init__(self, store: Store, *, wait: float = 10.0, min_interval: float = 0.05) -> None:
        self.store = store
        self.wait = wait
        self.min_interval = min_interval
        self.revision = 0
        self.versions: list[registry_pb2.VersionInfo] = []
        self.instances: list[registry_pb2.Instance] = []
        self.keys: dict[str, registry_pb2.ApiKey] = {}  # by id; salted hashes, in the view for sidecars
        self.stale: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._moved = asyncio.Event()
        self._keys_moved = asyncio.Event()
        self._stopped = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self._snapshot: registry_pb2.View | None = None

    # lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.versions = await asyncio.to_thread(self.store.all_versions)
        self.instances = await asyncio.to_thread(self.store.instances)
        self._apply_keys(await asyncio.to_thread(self.store.keys))
        self.revision = 1
        feeds = (("versions", self.store.wait_versions, self.store.all_versions),
                 ("instances", self.store.wait_instances, self.store.instances),
                 ("keys", self.store.wait_keys, self.store.keys))
        for name, wait, fetch in feeds:
            threading.Thread(target=self._watch, args=(name, wait, fetch), daemon=True,
                             name=f"registry-watch-{name}").start()

    def stop(self) -> None:
        self._stopped.set()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    # the watchers (threads) ---------------------------------------------------------

    def _watch(self, feed: str, wait: Callable[[int, float], int], fetch: Callable[[], list]) -> None:
        index, backoff = 0, 0.0
        while not self._stopped.is_set():
            try:
                new = wait(index, self.wait)
                if self._stopped.is_set():
                    return
                if new != index:  # moved, or went backwards (a reset): refetch either way
                    data = fetch()
                    index = new
                    self._post(self._apply, feed, data)
                if backoff:
                    backoff = 0.0
                    self._post(self._set_stale, None)
                time.sleep(self.min_interval)
            except Exception as exc:  # unreachable store: keep the last good view
                if self._stopped.is_set():
                    return
                index = 0
                backoff = min(10.0, max(0.5, backoff * 2))
                self._post(self._set_stale, f"{type(exc).__name__}: {exc}")
                time.sleep(backoff * random.uniform(0.5, 1.0))

    def _post(self, fn, *args) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed meanwhile
                pass

    # on the event loop ----------------------------------------------------------------

    def _apply(self, feed: str, data: list) -> None:
        if feed == "keys":
            self._apply_keys(data)
            self._bump()  # sidecars that take clients' calls straight verify keys from the view
            return
        if feed == "versions":
            self.versions = data
        else:
            self.instances = data
        self._bump()

    def _apply_keys(self, data: list[registry_pb2.ApiKey]) -> None:
        self.keys = {k.id: k for k in data}
        self._keys_moved.set()
        self._keys_moved = asyncio.Event()

    async def until_keys(self, predicate: Callable[[dict[str, registry_pb2.ApiKey]], bool],
                         timeout: float) -> bool:
        """Wait (bounded) until ``predicate(keys)`` holds; say whether it did."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.keys):
                    await self._keys_moved.wait()
            return True
        except TimeoutError:
            return False

    def _set_stale(self, reason: str | None) -> None:
        if reason and not self.stale:
            log.warning("registry store unreachable (%s); serving from the last good view", reason)
        elif not reason and self.stale:
            log.warning("registry store reachable again")
        self.stale = reason
        self._bump()

    def _bump(self) -> None:
        self.revision += 1
        self._moved.set()
        self._moved = asyncio.Event()
        for listener in self._listeners:
            listener()

    async def next(self, after: int) -> registry_pb2.View:
        """The view, once its revision is past ``after``."""
        while self.revision <= after:
            await self._moved.wait()
        return self.snapshot()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until ``predicate()`` holds for the view; say whether it did."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self.next(after=self.revision)
            return True
        except TimeoutError:
            return False

    def snapshot(self) -> registry_pb2.View:
        """The view as sent to subscribers; built once per revision, shared by all of them."""
        if self._snapshot is None or self._snapshot.revision != self.revision:
            self._snapshot = registry_pb2.View(revision=self.revision, versions=self.versions,
                                               instances=[i for i in self.instances if i.state == PASSING],
                                               stale=self.stale or "", keys=list(self.keys.values()))
        return self._snapshot
