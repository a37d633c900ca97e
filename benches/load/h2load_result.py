"""Reads h2load's report on stdin; prints one RESULT line as report.lua does for wrk: req/s, the
mean time per request in ms (h2load gives no percentiles) and errors (failed, errored, timed out
or not 2xx)."""
import re
import sys

text = sys.stdin.read()
rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
counts = re.search(r"requests: .* (\d+) failed, (\d+) errored, (\d+) timeout", text)
codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b", text)
if not (rps and counts and codes and mean):
    sys.exit("h2load_result.py: not an h2load report:\n" + text)
errors = sum(map(int, counts.groups())) + sum(map(int, codes.groups()[1:]))
mean_ms = float(mean.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[mean.group(2)]
print(f"RESULT rps={float(rps.group(1)):.0f} mean={mean_ms:.3f} errors={errors}")
