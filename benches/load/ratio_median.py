"""Reads "edge_rps floor_rps" lines (one per round) and prints the median of the rounds' ratios
(labelled by the first argument, "mcp-edge / Pingora floor" without one), their range and a 95%
interval for that median (order statistics, no assumption about the distribution): with rounds
this noisy, the interval says whether a median can be quoted."""
import math
import statistics
import sys


def median_interval(values):
    """The 95% distribution-free interval for a median: the two order statistics whose ranks
    the normal approximation of the binomial gives (a few rounds give the whole range)."""
    ordered = sorted(values)
    n = len(ordered)
    half_width = 1.96 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half_width))
    high = min(n - 1, math.ceil(n / 2 + half_width) - 1)
    return ordered[low], ordered[high]


label = sys.argv[1] if len(sys.argv) > 1 else "mcp-edge / Pingora floor"
rounds = [float(e) / float(f) for e, f in (line.split() for line in sys.stdin if line.strip())]
low, high = median_interval(rounds)
print(
    f"  {label}, by round: median {statistics.median(rounds):.2f} "
    f"(range {min(rounds):.2f}-{max(rounds):.2f}, 95% interval of the median {low:.2f}-{high:.2f}, "
    f"{len(rounds)} rounds)"
)
