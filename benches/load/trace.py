"""Replays a seeded trace of MCP reads against an mcp-edge and reports what its clients saw.

usage: python trace.py URL ADMIN_URL UPSTREAM_URL [--clients 200] [--seed 7] [--activities 6]

Each client has its own credential (`Authorization: Bearer user-N`; the upstream answers
`cacheScope: private`, so nothing is shared between clients) and does `--activities` things,
one after the other, with think times between reads (exponential, mean 150 ms):
- walks a book: chapters in order from the first (or second), 4 to 12 of them (50%);
- browses an index page, then 2 to 4 of its 20 children at random (25%);
- reads 3 single documents (25%).
Books, indexes and documents are picked with Zipf popularity. Standard library only. Prints one JSON line: hit ratio,
upstream reads (asked of the upstream before and after), client p50/p99 (ms), how many reads of
a walk past its first chapter were misses, and `mcp_prefetch_total` by kind and outcome.
"""
import argparse
import asyncio
import json
import random
import re
import statistics
import time


BOOKS, CHAPTERS, INDEXES, CHILDREN, SINGLES = 40, 12, 20, 20, 500


def zipf_picker(rng, n, s=1.1):
    weights = [1 / (k + 1) ** s for k in range(n)]
    return lambda: rng.choices(range(n), weights)[0]


def chapter(book, n):
    return f"demo://docs/{book * 100 + n}"


def activities(rng, count):
    """The URIs one client reads, activity by activity, each tagged sequential or not."""
    book, index, single = zipf_picker(rng, BOOKS), zipf_picker(rng, INDEXES), zipf_picker(rng, SINGLES)
    for _ in range(count):
        roll = rng.random()
        if roll < 0.5:
            b, start = book(), rng.choice([0, 0, 1])
            length = rng.randint(4, CHAPTERS - start)
            yield [(chapter(b, start + k), k > 0) for k in range(length)]
        elif roll < 0.75:
            i = index()
            children = rng.sample(range(CHILDREN), rng.randint(2, 4))
            yield [(f"demo://docs/{900_000 + i}", False)] + [
                (f"demo://docs/{500_000 + i * 100 + c}", False) for c in children
            ]
        else:
            yield [(f"demo://docs/{700_000 + single()}", False) for _ in range(3)]


class Connection:
    """One keep-alive HTTP/1.1 connection (stdlib only: the answers carry a Content-Length)."""

    def __init__(self, url):
        match = re.match(r"http://([^:/]+):(\d+)(/.*)?", url)
        self.host, self.port, self.path = match.group(1), int(match.group(2)), match.group(3) or "/"
        self.streams = None

    async def request(self, method, headers, body=b""):
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = f"{method} {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        answer_headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        length = int(answer_headers.get("content-length", 0))
        text = (await reader.readexactly(length)).decode()
        if answer_headers.get("connection", "").lower() == "close":
            writer.close()
            self.streams = None
        return status, answer_headers, text


def body(uri, n):
    return json.dumps({
        "jsonrpc": "2.0", "id": n, "method": "resources/read",
        "params": {"uri": uri, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "trace", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }},
    })


async def client(url, user, plan, rng, samples):
    http = Connection(url)
    headers = {
        "content-type": "application/json", "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28", "mcp-method": "resources/read",
        "authorization": f"Bearer user-{user}",
    }
    n = 0
    for activity in plan:
        for uri, sequential in activity:
            n += 1
            started = time.perf_counter()
            status, answer, text = await http.request("POST", {**headers, "mcp-name": uri}, body(uri, n).encode())
            elapsed = (time.perf_counter() - started) * 1000
            ok = status == 200 and f"\"Bearer user-{user}\"" in text
            samples.append((elapsed, answer.get("x-cache"), sequential, ok))
            await asyncio.sleep(min(0.5, max(0.02, rng.expovariate(1 / 0.15))))
        await asyncio.sleep(rng.uniform(0.1, 0.5))


async def upstream_reads(upstream):
    call = json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "reads", "arguments": {},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}).encode()
    _, _, text = await Connection(upstream).request("POST", {
        "content-type": "application/json", "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "reads",
        "connection": "close"}, call)
    return int(json.loads(text)["result"]["content"][0]["text"])


async def metrics_text(admin):
    _, _, text = await Connection(f"{admin}/metrics").request("GET", {"connection": "close"})
    return text


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("admin")
    parser.add_argument("upstream")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--activities", type=int, default=6)
    args = parser.parse_args()
    before = await upstream_reads(args.upstream)
    samples = []
    tasks = []
    for user in range(args.clients):
        rng = random.Random(args.seed * 100_003 + user)
        plan = list(activities(rng, args.activities))

        async def start(user=user, rng=rng, plan=plan):
            # Clients arrive over the first seconds, not all at once.
            await asyncio.sleep(rng.uniform(0, 5))
            await client(args.url, user, plan, rng, samples)
        tasks.append(start())
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    await asyncio.sleep(1.5)  # let prefetches in flight land, and the tracker count waste
    after = await upstream_reads(args.upstream)
    metrics = await metrics_text(args.admin)
    latencies = sorted(s[0] for s in samples)
    prefetch = {}
    for kind, outcome, value in re.findall(
            r'mcp_prefetch_total\{kind="(\w+)",outcome="(\w+)",route="[^"]*"\} (\d+)', metrics):
        prefetch.setdefault(kind, {})[outcome] = int(value)
    sequential = [s for s in samples if s[2]]
    print(json.dumps({
        "reads": len(samples),
        "seconds": round(seconds, 1),
        "wrong_owner_or_failed": sum(1 for s in samples if not s[3]),
        "hit_ratio": round(sum(1 for s in samples if s[1] == "HIT") / len(samples), 3),
        "upstream_reads": after - before,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
        "sequential_reads": len(sequential),
        "sequential_misses": sum(1 for s in sequential if s[1] != "HIT"),
        "prefetch": prefetch,
    }))


if __name__ == "__main__":
    asyncio.run(main())
