import os
import time

LOADS = []


def load():
    time.sleep(0.5)
    LOADS.append(time.time())
    return {"model": "loaded", "pid": os.getpid()}


def apply(input, state):
    return {"loads": len(LOADS), "state": state, "input": input}
