"""Reads wrk RESULT lines (report.lua) on stdin; prints one line of their medians."""
import statistics
import sys

runs = [dict(kv.split("=") for kv in line.split()[1:]) for line in sys.stdin if line.startswith("RESULT")]


def median(key):
    return statistics.median(float(run[key]) for run in runs)


rps = sorted(float(run["rps"]) for run in runs)
errors = sum(int(run["errors"]) for run in runs)
print(
    f"rps={median('rps'):.0f} p50={median('p50'):.3f} p99={median('p99'):.3f} errors={errors}"
    f" rps_range={rps[0]:.0f}-{rps[-1]:.0f}"
)
