"""BentoML beside algomesh: the same three no-op stages, chained with ``bentoml.depends``.

    Stage1 (POST /relay) --depends--> Stage2 --depends--> Stage3

``bentoml serve service:Stage1`` runs each service in a process of its own (BentoML's
defaults: one worker each) and calls a dependency over HTTP on a local socket. The payload
is a 100-character string (BentoML's JSON API: ``{"text": ...}`` in, the text back);
every stage answers what the next one answered. Run by bench/_bentoml.py from its own
virtualenv (BentoML would change algomesh's opentelemetry pins).
"""
import bentoml


@bentoml.service
class Stage3:
    @bentoml.api
    async def relay(self, text: str) -> str:
        return text


@bentoml.service
class Stage2:
    nxt = bentoml.depends(Stage3)

    @bentoml.api
    async def relay(self, text: str) -> str:
        return await self.nxt.to_async.relay(text=text)


@bentoml.service
class Stage1:
    nxt = bentoml.depends(Stage2)

    @bentoml.api
    async def relay(self, text: str) -> str:
        return await self.nxt.to_async.relay(text=text)
