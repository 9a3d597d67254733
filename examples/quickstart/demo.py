"""The quickstart demo: start the mesh, publish three algorithms, score a few tweets.

    python examples/quickstart/demo.py [--port 7700] [--data-dir DIR]

clean -> tokenize -> sentiment, where demo/clean pipes into demo/tokenize from inside the
algorithm and this script chains the result into demo/sentiment, as the whitepaper does:
``sentiment.pipe(clean.pipe(tweet)).result``. If a mesh already answers at the address,
the demo uses it and leaves it running; otherwise it starts one and stops it at the end.
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
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


def start_mesh(port: int, data_dir: str | None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "algomesh.cli", "up", "--port", str(port)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        print("  " + line.rstrip())
        m = re.search(r"listening on (\S+)", line)
        if m:
            address = m.group(1)
        if "Ctrl-C" in line:
            return proc, address
    raise SystemExit(f"algomesh up exited with code {proc.wait()}")


def mesh_answers(address: str) -> bool:
    try:
        with algomesh.client(address=address) as c:
            c.algorithms()
        return True
    except algomesh.UnavailableError:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=7700)
    p.add_argument("--data-dir", help="default: algomesh up's per-user data directory")
    a = p.parse_args()

    proc = None
    address = f"localhost:{a.port}"
    if a.port and mesh_answers(address):
        print(f"Using the mesh already running at {address}")
    else:
        print("Starting the mesh (algomesh up):")
        proc, address = start_mesh(a.port, a.data_dir)
    try:
        client = algomesh.client("demo-key", address)
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
        print(f"Try it yourself:  algomesh --address {address} call demo/clean --text 'what a lovely day'")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            print("Mesh stopped.")


if __name__ == "__main__":
    main()
