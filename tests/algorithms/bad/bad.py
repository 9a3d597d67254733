import os
import signal
import time


def helper_that_fails(x):
    raise ValueError(f"cannot handle {x!r}")


def apply(input):
    cmd = input.get("do") if isinstance(input, dict) else input
    if cmd == "raise":
        return helper_that_fails(input.get("value"))
    if cmd == "exit":
        os._exit(3)
    if cmd == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if cmd == "sleep":
        time.sleep(input["seconds"])
        return "slept"
    if cmd == "print":
        print("line one")
        print("line two")
        return "printed"
    if cmd == "pid":
        return os.getpid()
    if cmd == "unencodable":
        return {1, 2, 3}
    return {"echo": input}
