"""The runner conformance algorithm in Python (tests/conformance/README.md)."""
import sys
import time

import algomesh

LOADS = 0


def load():
    global LOADS
    LOADS += 1


def apply(input):
    if isinstance(input, str):
        return input
    if isinstance(input, bytes):
        return input[::-1]
    if not isinstance(input, dict) or "op" not in input:
        return input
    op = input["op"]
    if op == "echo":
        return input["value"]
    if op == "text":
        return str(input["value"])
    if op == "bytes":
        return input["value"].encode()
    if op == "loads":
        return LOADS
    if op == "raise":
        raise ValueError(input["message"])
    if op == "crash":
        sys.stdout.flush()
        import os
        os._exit(3)
    if op == "print":
        print(input["value"])
        return "printed"
    if op == "pipe":
        result = algomesh.client().algo(input["target"]).pipe(input["input"]).result
        return {"via": "python", "result": result}
    if op == "sleep":
        time.sleep(input["ms"] / 1000)
        return "slept"
    return input
