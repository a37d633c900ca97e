"""Reads RESULT lines (report.lua for wrk, h2load_result.py for h2load) on stdin; prints one line
of their medians: req/s, then each latency figure the lines carry (wrk: p50 and p99; h2load: the
mean), errors summed, and the range of req/s."""
import statistics
import sys

runs = [dict(kv.split("=") for kv in line.split()[1:]) for line in sys.stdin if line.startswith("RESULT")]


def median(key):
    return statistics.median(float(run[key]) for run in runs)


rps = sorted(float(run["rps"]) for run in runs)
errors = sum(int(run["errors"]) for run in runs)
latencies = "".join(f" {key}={median(key):.3f}" for key in runs[0] if key not in ("rps", "errors"))
print(f"rps={median('rps'):.0f}{latencies} errors={errors} rps_range={rps[0]:.0f}-{rps[-1]:.0f}")
