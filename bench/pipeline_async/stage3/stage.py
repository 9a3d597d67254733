"""bench/stage3, async: the end of the pipeline; answers its input (a stream chunk by chunk)."""
import algomesh


async def apply(input):
    if isinstance(input, algomesh.Stream):
        return _echo(input)
    return input


async def _echo(stream):
    async for chunk in stream:
        yield chunk
