"""bench/stage1, async: passes its input on to bench/stage2 and answers with its answer, as
bench/pipeline/stage1 does, from an ``async def apply`` on the runner's event loop (no
worker thread per call) with the SDK's async client, as Ray Serve's async deployments do.
"""
import algomesh

NEXT = "bench/stage2"
client = None  # made on the loop that runs apply


async def apply(input):
    global client
    if client is None:
        client = algomesh.async_client()
    nxt = client.algo(NEXT)
    if isinstance(input, algomesh.Stream):
        return nxt.stream(input)  # chunks on as they arrive, its answer back as it comes
    return (await nxt.pipe(input)).result

