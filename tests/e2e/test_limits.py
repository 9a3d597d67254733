"""Limits: too big or too many is refused at once, typed, before it costs a runner anything."""
import time

import pytest

import algomesh
from tests.conftest import write_algorithm

SLEEPY = "import time\ndef apply(x):\n    time.sleep(x)\n    return x\n"


def test_a_payload_over_the_limit_never_reaches_a_runner(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "big", "lim/big", "1.0.0", "def apply(x):\n    return len(x)\n"))
    t0 = time.monotonic()
    with pytest.raises(algomesh.LimitError) as e:
        client.algo("lim/big").pipe(b"x" * (11 * 1024 * 1024)).result
    assert e.value.reason == "PAYLOAD_TOO_LARGE" and "the limit is 10485760" in e.value.message
    assert time.monotonic() - t0 < 5
    assert client.instances("lim/big") == []  # refused at the ingress: not even a cold start
    assert client.algo("lim/big").pipe(b"x" * (9 * 1024 * 1024)).result == 9 * 1024 * 1024


def test_an_instance_sheds_load_past_its_in_flight_limit(mesh, client, tmp_path):
    mesh.publish(write_algorithm(tmp_path / "sleepy", "lim/sleepy", "1.0.0", SLEEPY,
                                 extra_toml="[scaling]\nconcurrency = 1\nmax_in_flight = 2\n"))
    sleepy = client.algo("lim/sleepy").set_options(timeout=30)
    assert sleepy.pipe(0).result == 0  # warm
    t0 = time.monotonic()
    responses = [sleepy.pipe(1) for _ in range(6)]
    outcomes = []
    for r in responses:
        try:
            outcomes.append(r.result)
        except algomesh.LimitError as exc:
            outcomes.append(exc.reason)
    assert outcomes.count("OVERLOADED") == 4 and outcomes.count(1) == 2, outcomes
    assert time.monotonic() - t0 < 4  # two ran one after the other; nobody queued behind them
    assert sleepy.pipe(0).result == 0  # and it serves again once the load is gone


def test_max_in_flight_below_concurrency_is_a_manifest_error(mesh, tmp_path):
    folder = write_algorithm(tmp_path / "bad", "lim/bad", "1.0.0", SLEEPY,
                             extra_toml="[scaling]\nconcurrency = 4\nmax_in_flight = 2\n")
    out = mesh.cli("publish", str(folder))
    assert out.returncode == 1 and "max_in_flight must be at least" in out.stderr.decode()
