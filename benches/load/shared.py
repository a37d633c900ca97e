"""Load for the shared-tier benchmark (benches/load/shared.sh), standard library only.

`run`: CLIENTS keep-alive clients read zipf-distributed public documents for SECONDS; prints
JSON: requests, hit ratio overall and per 10 s, upstream reads during the run, p50 and p99.
`walk`: reads the documents FIRST..FIRST+COUNT-1 once each, on CLIENTS connections (each
document once, in order on each); with --report, prints JSON: reads, hits, p50, p99 (client
side) and reads per second.
"""
import argparse
import asyncio
import importlib.util
import json
import os
import random
import time

# The keep-alive client and request body of the trace benchmark (its module name would shadow
# the standard library's `trace`, hence the explicit load).
_spec = importlib.util.spec_from_file_location("mcp_trace", os.path.join(os.path.dirname(__file__), "trace.py"))
_trace = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_trace)
Connection, body = _trace.Connection, _trace.body

HEADERS = {
    "content-type": "application/json", "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2026-07-28", "mcp-method": "resources/read",
}


def headers_for(uri):
    return {**HEADERS, "mcp-name": uri}


async def upstream_reads(url):
    http = Connection(url)
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "reads", "arguments": {}, "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
    _, _, text = await http.request("POST", {**HEADERS, "mcp-method": "tools/call", "mcp-name": "reads"}, call.encode())
    return int(json.loads(text)["result"]["content"][0]["text"])


async def reader(url, rng, weights, uris, until, samples):
    http = Connection(url)
    n = 0
    while time.monotonic() < until:
        uri = rng.choices(uris, weights)[0]
        n += 1
        started = time.monotonic()
        status, answer, _ = await http.request("POST", headers_for(uri), body(uri, n).encode())
        samples.append((started, time.monotonic() - started, answer.get("x-cache") == "HIT", status))


async def run(args):
    rng = random.Random(args.seed)
    uris = [f"demo://docs/{i}" for i in range(args.documents)]
    weights = [1 / (rank + 1) ** 1.1 for rank in range(args.documents)]
    before = await upstream_reads(args.upstream)
    start = time.monotonic()
    until = start + args.seconds
    samples = []
    await asyncio.gather(*(reader(args.edge, random.Random(rng.random()), weights, uris, until, samples)
                           for _ in range(args.clients)))
    reads = await upstream_reads(args.upstream) - before
    buckets = {}
    for at, _, hit, _ in samples:
        bucket = int((at - start) // 10) * 10
        total, hits = buckets.get(bucket, (0, 0))
        buckets[bucket] = (total + 1, hits + hit)
    latencies = sorted(latency for _, latency, _, _ in samples)
    print(json.dumps({
        "requests": len(samples),
        "errors": sum(status != 200 for *_, status in samples),
        "hit_ratio": round(sum(hit for _, _, hit, _ in samples) / max(1, len(samples)), 3),
        "hit_ratio_per_10s": [round(hits / total, 3) for _, (total, hits) in sorted(buckets.items())],
        "upstream_reads": reads,
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }))


async def walk(args):
    samples = []

    async def one(numbers):
        http = Connection(args.edge)
        for n in numbers:
            uri = f"demo://docs/{n}"
            started = time.monotonic()
            status, answer, _ = await http.request("POST", headers_for(uri), body(uri, n).encode())
            samples.append((time.monotonic() - started, answer.get("x-cache") == "HIT", status))
    numbers = list(range(args.first, args.first + args.count))
    start = time.monotonic()
    await asyncio.gather(*(one(numbers[i::args.clients]) for i in range(args.clients)))
    elapsed = time.monotonic() - start
    if args.report:
        latencies = sorted(latency for latency, _, _ in samples)
        print(json.dumps({
            "reads": len(samples),
            "errors": sum(status != 200 for *_, status in samples),
            "hits": sum(hit for _, hit, _ in samples),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
            "per_second": round(len(samples) / elapsed),
        }))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "walk"])
    parser.add_argument("edge")
    parser.add_argument("--upstream")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--documents", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args) if args.mode == "run" else walk(args))


if __name__ == "__main__":
    main()
