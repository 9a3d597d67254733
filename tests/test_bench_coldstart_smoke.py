"""bench/coldstart.py's smoke mode runs in CI so it never rots (its figures are judged from
full runs, docs/performance.md); here only that it runs and that its numbers make sense."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(660)  # two meshes, nine cold starts: about a minute, more on a busy machine
def test_coldstart_benchmark_smoke(tmp_path):
    out_json = tmp_path / "coldstart.json"
    out = subprocess.run([sys.executable, "-m", "bench.coldstart", "--smoke", "--json", str(out_json)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cold first call, pre-start on" in out.stdout and "cold first call, pre-start off" in out.stdout
    result = json.loads(out_json.read_text())
    s, modes = result["summary"], result["modes"]
    L = result["config"]["load_seconds"]
    assert L > 0 and result["config"]["smoke"]
    for key in ("warm_s", "cold_off_s", "cold_on_s", "cold_off_over_L", "cold_on_over_L", "target_on_s"):
        assert math.isfinite(s[key]) and s[key] > 0, key
    # without pre-start the three loads run one after another; with it, at least one runs
    assert s["cold_off_s"] >= 3 * L, out.stdout
    assert s["cold_on_s"] >= L, out.stdout
    assert s["warm_s"] < min(s["cold_on_s"], s["cold_off_s"])
    # pre-start saves the stages after the first their start: it is faster than without
    assert s["cold_on_s"] < s["cold_off_s"], out.stdout
    for mode in ("off", "on"):
        m = modes[mode]
        assert len(m["cold_s"]) == result["config"]["rounds"] == 1
        assert len(m["warm_s"]) == result["config"]["warm_calls"]
    # the spans (when they all arrived) say how many hops of the cold call were cold starts
    off_hops, on_hops = modes["off"]["cold_hops"][0], modes["on"]["cold_hops"][0]
    if off_hops is not None:
        assert len(off_hops) == 3, off_hops
    if on_hops is not None:
        assert len(on_hops) == 1, on_hops
    assert modes["off"]["prestarts"][0] in (0, None)
