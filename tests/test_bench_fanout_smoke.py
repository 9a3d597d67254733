"""bench/fanout.py's smoke mode runs in CI so it never rots (its figures are judged from
full runs, docs/performance.md); here only that it runs and that its numbers make sense."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(360)  # two meshes, three style instances, eleven pipeline calls: about 15 s
def test_fanout_benchmark_smoke(tmp_path):
    out_json = tmp_path / "fanout.json"
    out = subprocess.run([sys.executable, "-m", "bench.fanout", "--smoke", "--json", str(out_json)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "speed-up, 2 instances over 1" in out.stdout and "cached, 1 instance(s)" in out.stdout
    result = json.loads(out_json.read_text())
    s = result["summary"]
    assert result["config"]["smoke"] and result["config"]["rounds"] == 1
    assert math.isfinite(s["speedup_two_over_one"]) and s["speedup_two_over_one"] > 0
    for mesh, instances in (("one", 1), ("two", 2)):
        m = s[mesh]
        assert m["frames"] == 20  # 2 s at 10 fps
        assert m["instances_used"] == instances, m  # the frames spread over both instances of "two"
        assert m["bypass_hits"] == 0, m            # cache=false: nothing read from the cache
        for key in ("pipeline_s", "cached_a_s", "cached_b_s", "bypass_a_s", "bypass_b_s"):
            assert math.isfinite(m[key]) and m[key] > 0, key
    # one instance: every frame of the second pipeline comes from the cache, and skips the style work
    assert s["one"]["cached_b_hits"] == 20
    assert s["one"]["cached_b_s"] < s["one"]["bypass_b_s"], out.stdout
    runs = result["runs"]["two"]["fanout"][0]
    assert sum(runs["styled_by"].values()) == 20 and len(runs["styled_by"]) == 2
