"""bench/stage2: passes its input on to bench/stage3 from inside apply and answers with its answer.

A unary call pipes the value (``.pipe(x).result``); a streamed call streams the chunks on
as they arrive (``.stream(stream)``) and streams the answer back. Through this algorithm's
own sidecar, as any algorithm pipes: its permissions, deadline and trace apply.
"""
import algomesh

NEXT = "bench/stage3"
client = algomesh.client()


def apply(input):
    nxt = client.algo(NEXT)
    if isinstance(input, algomesh.Stream):
        return nxt.stream(input)
    return nxt.pipe(input).result
