"""The figures of one run as ratios against issue 9's targets, a printed table, and JSON.

Per hop, on both sides the same way: a path of n server processes crosses n - 1 hops
beyond the echo's one, so

    latency per hop = (p50(path) - p50(bare echo)) / (n - 1)
    CPU per hop     = (CPU/call of the path's servers - CPU/call of the bare echo) / (n - 1)

and an algomesh path is compared with the bare chain of as many processes. "Ray Serve's
fastest" is, strictly, its best throughput and its best p50 over every Ray path measured
(they may come from different configurations; the table says which). If any Ray path was
not measured while others were (a cluster that did not start, a path that failed), Ray's
fastest is not known: those ratios are not judged, and their note gives the figure
against the Ray paths that were measured.

The floor with mutual TLS (``bare_tls``: the A->B->C chain with the mesh's transport
security on every hop, nothing else) gets the same per-hop and Ray ratios, without a
target: they say how much of each target mTLS alone takes, since algomesh keeps it on.
Each three-stage path is also set against it (throughput and p50, no target), and so
is each stream through three processes (the floor streams with mTLS too). The native
paths (``native``: bench/_native.py, native proxies where the sidecars are) get the
same ratios as the mTLS floor, without targets: the best a native sidecar could do.
"""
from __future__ import annotations

import math

TARGETS = {  # name -> (op, bound)
    "hop_latency": ("<=", 1.3),
    "hop_cpu": ("<=", 1.3),
    "throughput_vs_ray": (">=", 2.0),
    "throughput_vs_abc": (">=", 0.5),
    "p50_vs_ray": ("<=", 0.6),
    "sidecar_rss_idle": ("<=", 60.0),
    "sidecar_rss_load": ("<=", 60.0),
    "stream_throughput": (">=", 0.5),
    "stream_rss_growth": ("<=", 64.0),
}


def _ratio(name: str, label: str, value: float | None, unit: str = "x", note: str = "",
           target: str | None = None) -> dict:
    op, bound = TARGETS[target] if target else (None, None)
    met = None
    if op and value is not None and math.isfinite(value):
        met = value <= bound if op == "<=" else value >= bound
    return {"name": name, "label": label, "value": value, "unit": unit, "target": f"{op} {bound:g}" if op else None,
            "met": met, "note": note}


def ratios(paths: dict[str, dict], streams: dict[str, dict], skipped: dict[str, str]) -> list[dict]:
    out = []
    echo = paths.get("bare1")
    ray = {k: v for k, v in paths.items() if v["kind"] == "ray"}
    bento = {k: v for k, v in paths.items() if v["kind"] == "bentoml"}
    abc = next((v for k, v in paths.items() if v["kind"] == "bare" and v["processes"] == 3), None)
    abc_tls = next((v for k, v in paths.items() if v["kind"] == "bare_tls" and v["processes"] == 3), None)
    ray_why = next((skipped[k] for k in skipped if k.startswith("ray")), "no Ray path ran")
    ray_missing = next((f"{k} was not measured: {skipped[k]}" for k in skipped if k.startswith("ray")), "")
    for key, m in paths.items():
        if m["kind"] not in ("algomesh", "bare_tls", "native") or m["processes"] < 2:
            continue
        n = m["processes"]
        held = m["kind"] == "algomesh"  # the mTLS floor and the native paths: the same figures, no target

        def goal(name: str) -> str | None:
            return name if held else None  # (called at once, in this iteration)

        bare = paths.get(f"bare{n}")
        if echo and bare and n > 1:
            mh = (m["p50_us"] - echo["p50_us"]) / (n - 1)
            bh = (bare["p50_us"] - echo["p50_us"]) / (n - 1)
            out.append(_ratio(f"{key}.hop_latency", f"{key}: latency per hop / bare proxy's",
                              mh / bh if bh > 0 else float("nan"),
                              note=f"{mh:.0f} us vs {bh:.0f} us per hop ({n} processes each)", target=goal("hop_latency")))
            mc = (m["cpu_us_per_call_servers"] - echo["cpu_us_per_call_servers"]) / (n - 1)
            bc = (bare["cpu_us_per_call_servers"] - echo["cpu_us_per_call_servers"]) / (n - 1)
            out.append(_ratio(f"{key}.hop_cpu", f"{key}: CPU per hop / bare proxy's",
                              mc / bc if bc > 0 else float("nan"),
                              note=f"{mc:.0f} us vs {bc:.0f} us per hop", target=goal("hop_cpu")))
        sidecars = [k for k in m["rss_idle_mib"] if k.startswith("sidecar")]
        if sidecars:
            idle = max(m["rss_idle_mib"][k] for k in sidecars)
            load = max(m["rss_load_mib"].get(k, 0.0) for k in sidecars)
            out.append(_ratio(f"{key}.sidecar_rss_idle", f"{key}: largest sidecar RSS, idle", idle, "MiB",
                              target="sidecar_rss_idle"))
            out.append(_ratio(f"{key}.sidecar_rss_load", f"{key}: largest sidecar RSS, under load", load, "MiB",
                              target="sidecar_rss_load"))
        if m["stages"] == 3:
            if ray:
                best_t = max(ray, key=lambda k: ray[k]["calls_per_s"])
                best_p = min(ray, key=lambda k: ray[k]["p50_us"])
                t = m["calls_per_s"] / ray[best_t]["calls_per_s"]
                p50 = m["p50_us"] / ray[best_p]["p50_us"]
                t_note = f"{m['calls_per_s']:.0f} vs {ray[best_t]['calls_per_s']:.0f} calls/s ({best_t})"
                p_note = f"{m['p50_us'] / 1000:.2f} vs {ray[best_p]['p50_us'] / 1000:.2f} ms ({best_p})"
                if ray_missing:  # with any Ray path missing, Ray's fastest is unknown: not judged
                    t_note = f"not judged, {ray_missing}; against the Ray paths measured: {t:.2f}x, {t_note}"
                    p_note = f"not judged, {ray_missing}; against the Ray paths measured: {p50:.2f}x, {p_note}"
                    t = p50 = None
                out.append(_ratio(f"{key}.throughput_vs_ray", f"{key}: throughput / Ray Serve's fastest", t,
                                  note=t_note, target=goal("throughput_vs_ray")))
                out.append(_ratio(f"{key}.p50_vs_ray", f"{key}: p50 / Ray Serve's fastest", p50,
                                  note=p_note, target=goal("p50_vs_ray")))
            else:
                out.append(_ratio(f"{key}.throughput_vs_ray", f"{key}: throughput / Ray Serve's fastest", None,
                                  note=f"not measured: {ray_why}", target=goal("throughput_vs_ray")))
                out.append(_ratio(f"{key}.p50_vs_ray", f"{key}: p50 / Ray Serve's fastest", None,
                                  note=f"not measured: {ray_why}", target=goal("p50_vs_ray")))
            if abc:
                out.append(_ratio(f"{key}.throughput_vs_abc", f"{key}: throughput / bare A->B->C's",
                                  m["calls_per_s"] / abc["calls_per_s"],
                                  note=f"{m['calls_per_s']:.0f} vs {abc['calls_per_s']:.0f} calls/s",
                                  target=goal("throughput_vs_abc")))
            if m["kind"] != "bare_tls" and abc_tls:
                out.append(_ratio(f"{key}.throughput_vs_abc_tls", f"{key}: throughput / bare A->B->C with mTLS",
                                  m["calls_per_s"] / abc_tls["calls_per_s"],
                                  note=f"{m['calls_per_s']:.0f} vs {abc_tls['calls_per_s']:.0f} calls/s (no target)"))
                out.append(_ratio(f"{key}.p50_vs_abc_tls", f"{key}: p50 / bare A->B->C with mTLS",
                                  m["p50_us"] / abc_tls["p50_us"],
                                  note=f"{m['p50_us'] / 1000:.2f} vs {abc_tls['p50_us'] / 1000:.2f} ms (no target)"))
            for bk, b in (bento.items() if held else ()):
                out.append(_ratio(f"{key}.throughput_vs_{bk}", f"{key}: throughput / BentoML's",
                                  m["calls_per_s"] / b["calls_per_s"],
                                  note=f"{m['calls_per_s']:.0f} vs {b['calls_per_s']:.0f} calls/s (no target)"))
    for key, s in streams.items():
        if key.startswith("bare"):
            continue
        bare = streams.get(f"bare{s['processes']}_stream")
        if bare:
            out.append(_ratio(f"{key}.stream_throughput", f"{key}: MiB/s / bare streaming's",
                              s["mib_per_s"] / bare["mib_per_s"],
                              note=f"{s['mib_per_s']:.0f} vs {bare['mib_per_s']:.0f} MiB/s ({s['processes']} processes)",
                              target="stream_throughput"))
        tls = streams.get(f"bare_tls{s['processes']}_stream")
        if tls:
            out.append(_ratio(f"{key}.stream_throughput_vs_tls", f"{key}: MiB/s / bare streaming's with mTLS",
                              s["mib_per_s"] / tls["mib_per_s"],
                              note=f"{s['mib_per_s']:.0f} vs {tls['mib_per_s']:.0f} MiB/s (no target)"))
        worst = max(s["rss_growth_mib"], key=s["rss_growth_mib"].get)
        out.append(_ratio(f"{key}.stream_rss_growth", f"{key}: largest RSS growth of a process",
                          s["max_rss_growth_mib"], "MiB", note=worst, target="stream_rss_growth"))
    return out


# ------------------------------------------------------------------------- print


def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def print_report(doc: dict) -> None:
    c, paths, streams = doc["config"], doc["paths"], doc["streams"]
    print(f"algomesh side-by-side benchmark, {doc['date']}: {c['payload_bytes']}-byte payload; per path "
          f"{c['calls']} sequential calls (after {c['warmup']} warm-up) and {c['seconds']:g}s with "
          f"{c['concurrency']} in flight, in {c['rounds']} interleaved rounds; "
          f"{doc['machine']['cpus']} CPUs ({doc['machine']['cpu_model']}), load average {doc['load_average']['start']}")
    print()
    print("LATENCY AND THROUGHPUT")
    tput = f"calls/s @{c['concurrency']}"
    print(f"{'path':<44} {'procs':>5} {'p50 ms':>8} {'p99 ms':>8} {tput:>12} "
          f"{'CPU us/call':>11} {'client CPU':>10}")
    for key, v in paths.items():
        print(f"{v['label']:<44} {v['processes'] or len(v['cpu_us_per_call']):>5} {v['p50_us'] / 1000:8.2f} "
              f"{v['p99_us'] / 1000:8.2f} {v['calls_per_s']:12.0f} {v['cpu_us_per_call_servers']:11.0f} "
              f"{v['cpu_us_per_call_client']:10.0f}")
    for key, why in doc["skipped"].items():
        print(f"{key:<44} skipped: {why}")
    print()
    print("PER PROCESS (CPU per call during the throughput phase; RSS at rest and peak under load)")
    print(f"{'path':<22} {'process':<34} {'CPU us/call':>11} {'RSS idle MiB':>12} {'RSS load MiB':>12}")
    for key, v in paths.items():
        for proc in dict.fromkeys([*v["rss_idle_mib"], *v["cpu_us_per_call"]]):
            print(f"{key:<22} {proc:<34} {_f(v['cpu_us_per_call'].get(proc), '11.0f'):>11} "
                  f"{_f(v['rss_idle_mib'].get(proc), '12.1f'):>12} {_f(v['rss_load_mib'].get(proc), '12.1f'):>12}")
    print()
    print("STREAMING")
    if streams:
        for key, s in streams.items():
            growth = ", ".join(f"{k} {g:.0f}" for k, g in s["rss_growth_mib"].items())
            print(f"{s['label']:<50} {s['mib']:g} MiB: {s['median_seconds']:.2f}s median, {s['mib_per_s']:.0f} MiB/s; "
                  f"peak RSS growth MiB: {growth}")
    else:
        print("no streaming path")
    print()
    print("TARGETS (issue 9)")
    for r in doc["ratios"]:
        value = "n/a" if r["value"] is None else (f"{r['value']:.2f}x" if r["unit"] == "x" else f"{r['value']:.1f} {r['unit']}")
        verdict = "" if r["target"] is None else ("MET" if r["met"] else "NOT MET" if r["met"] is False else "NOT MEASURED")
        target = f"target {r['target']}" if r["target"] else "(no target)"
        print(f"{r['label']:<56} {value:>10}  {target:<14} {verdict:<12} {r['note']}")


# ---------------------------------------------------------------------- markdown


def markdown(doc: dict) -> str:
    """The run's tables in Markdown, for docs/performance.md (``python -m bench --markdown FILE``)."""
    c, m = doc["config"], doc["machine"]
    out = [f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
           f"Python {m['python']}, grpcio {m['grpcio']}, protobuf {m['protobuf']}, Ray {m['ray']}, "
           f"BentoML {m['bentoml']}. Date: {doc['date']}. Load average at start {doc['load_average']['start']}, "
           f"at end {doc['load_average']['end']}. Command: `{doc['command']}` ({doc['duration_s']:.0f} s).", "",
           f"| path | processes | p50 ms | p99 ms | calls/s at {c['concurrency']} in flight | "
           "CPU µs/call, servers | CPU µs/call, client |", "|---|---:|---:|---:|---:|---:|---:|"]
    for v in doc["paths"].values():
        out.append(f"| {v['label']} | {v['processes'] or len(v['cpu_us_per_call'])} | {v['p50_us'] / 1000:.2f} | "
                   f"{v['p99_us'] / 1000:.2f} | {v['calls_per_s']:.0f} | {v['cpu_us_per_call_servers']:.0f} | "
                   f"{v['cpu_us_per_call_client']:.0f} |")
    for key, why in doc["skipped"].items():
        out.append(f"| {key} | | | | not measured: {why} | | |")
    out += ["", "| process (path) | CPU µs/call | RSS idle MiB | RSS under load MiB |", "|---|---:|---:|---:|"]
    for key, v in doc["paths"].items():
        if v["kind"] not in ("algomesh", "native") and key not in ("bare3", "bare_tls3"):  # the floors look alike: one chain each
            continue
        for proc in v["cpu_us_per_call"]:
            out.append(f"| {proc} ({key}) | {v['cpu_us_per_call'][proc]:.0f} | {v['rss_idle_mib'].get(proc, 0):.1f} | "
                       f"{v['rss_load_mib'].get(proc, 0):.1f} |")
    out += ["", f"| {c['stream_mib']:g} MiB streamed | processes | s (median) | MiB/s | largest RSS growth MiB |",
            "|---|---:|---:|---:|---:|"]
    for s in doc["streams"].values():
        worst = max(s["rss_growth_mib"], key=s["rss_growth_mib"].get)
        out.append(f"| {s['label']} | {s['processes']} | {s['median_seconds']:.2f} | {s['mib_per_s']:.0f} | "
                   f"{s['max_rss_growth_mib']:.0f} ({worst}) |")
    out += ["", "| ratio | value | target | |", "|---|---:|---|---|"]
    for r in doc["ratios"]:
        value = "n/a" if r["value"] is None else (f"{r['value']:.2f}×" if r["unit"] == "x" else f"{r['value']:.1f} {r['unit']}")
        verdict = "" if r["target"] is None else ("**met**" if r["met"] else "not met" if r["met"] is False else "not measured")
        note = f" ({r['note']})" if r["note"] else ""
        out.append(f"| {r['label']}{note} | {value} | {r['target'] or 'none'} | {verdict} |")
    return "\n".join(out) + "\n"
