"""The quickstart demo: start the mesh, publish three algorithms, score a few tweets.

    python examples/quickstart/demo.py [--port 7700] [--data-dir DIR]

clean -> tokenize -> sentiment, where demo/clean pipes into demo/tokenize from inside the
algorithm and this script chains the result into demo/sentiment, as the whitepaper does:
``sentiment.pipe(clean.pipe(tweet)).result``. If a mesh already answers at the address,
the demo uses it (with the key in $ALGOMESH_API_KEY) and leaves it running; otherwise it
starts one, in a fresh data directory unless --data-dir says otherwise, takes the admin
key it prints, and stops it at the end.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import algomesh

HERE = Path(__file__).resolve().parent

TWEETS = [
    "Just landed in Lisbon and the weather is AMAZING!!! ☀️ #travel @TAPAirPortugal",
    "Worst customer service ever. Waited 2 hours and they hung up on me. https://t.co/x1",
    "The new update is not bad at all, really enjoying the faster search",
    "Meeting moved to 3pm, room 4B",
    "I hate how slow my laptop is today... so annoying",
    "Thanks @sam for the brilliant talk, totally recommend it!",
]


def start_mesh(port: int, data_dir: str) -> tuple[subprocess.Popen, str, str]:
    """``algomesh up``; returns the process, its address and the admin key it printed
    (in a data dir that has keys already, it is asked for a new one)."""
    cmd = [sys.executable, "-m", "algomesh.cli", "up", "--port", str(port), "--data-dir", data_dir]
    if (Path(data_dir) / "registry.db").exists():
        cmd.append("--new-admin-key")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    address = key = ""
    for line in proc.stdout:
        m = re.search(r"admin key (amk_\S+)", line)
        if m:
            key = m.group(1)
            line = line.replace(key, key[:21] + "…")  # the demo keeps it; no need to show it all
        print("  " + line.rstrip())
        m = re.search(r"listening on (\S+)", line)
        if m:
            address = m.group(1)
        if "Ctrl-C" in line:
            return proc, address, key
    raise SystemExit(f"algomesh up exited with code {proc.wait()}")


def mesh_answers(address: str) -> bool:
    try:
        with algomesh.client(address=address) as c:
            c.algorithms()
        return True
    except algomesh.UnavailableError:
        return False
    except algomesh.PermissionError_:  # it answers; the key is another matter
        return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=7700)
    p.add_argument("--data-dir", help="default: algomesh up's per-user data directory")
    a = p.parse_args()

    proc = scratch = None
    address = f"localhost:{a.port}"
    key = os.environ.get("ALGOMESH_API_KEY", "")
    if a.port and mesh_answers(address):
        print(f"Using the mesh already running at {address}")
        if not key:
            raise SystemExit("set ALGOMESH_API_KEY to a key of that mesh (its admin key was printed when it "
                             "first started), or stop it and run the demo again")
    else:
        print("Starting the mesh (algomesh up):")
        data_dir = a.data_dir or (scratch := tempfile.mkdtemp(prefix="algomesh-demo-"))
        proc, address, key = start_mesh(a.port, data_dir)
    try:
        client = algomesh.client(key, address)
        print("\nPublishing the three stages:")
        for stage in ("tokenize", "clean", "sentiment"):
            r = client.publish(HERE / stage)
            print(f"  {r.version.manifest.name} {r.version.manifest.version}"
                  f"{'' if r.created else ' (already published)'}")

        clean = client.algo("demo/clean")
        sentiment = client.algo("demo/sentiment/1.*")
        print("\nScoring tweets: sentiment.pipe(clean.pipe(tweet)).result")
        print("(the first call cold-starts each stage; later calls are warm)\n")
        for tweet in TWEETS:
            t0 = time.perf_counter()
            resp = sentiment.pipe(clean.pipe(tweet))
            out = resp.result
            ms = (time.perf_counter() - t0) * 1000
            print(f"  {out['label']:>8} {out['score']:+6.1f}  {ms:7.1f} ms  {tweet}")
        print(f"\nAnswered by {resp.metadata.algorithm} {resp.metadata.version}.")
        print("\nYour own mesh: run `algomesh up` (it prints your admin key once), then\n"
              "  export ALGOMESH_API_KEY=amk_...\n"
              "  algomesh publish examples/quickstart/tokenize && algomesh publish examples/quickstart/clean\n"
              "  algomesh call demo/clean --text 'what a lovely day'")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            print("Mesh stopped.")
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
