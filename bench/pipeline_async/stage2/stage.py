"""bench/stage2, async: passes its input on to bench/stage3 and answers with its answer, as
bench/pipeline/stage2 does, from an ``async def apply`` on the runner's event loop (no
worker thread per call) with the SDK's async client, as Ray Serve's async deployments do.
"""
import algomesh

NEXT = "bench/stage3"
client = None  # made on the loop that runs apply


async def apply(input):
    global client
    if client is None:
        client = algomesh.async_client()
    nxt = client.algo(NEXT)
    if isinstance(input, algomesh.Stream):
        return nxt.stream(input)  # chunks on as they arrive, its answer back as it comes
    return (await nxt.pipe(input)).result

