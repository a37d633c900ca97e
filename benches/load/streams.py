#!/usr/bin/env python3
"""Holds N idle server-to-client streams (handshake-era GET streams of one session) open
through mcp-edge, then checks that every one of them is still alive and delivering.

usage: streams.py URL N HOLD_SECONDS
Prints: how many streams opened, how many still delivered events at the end, and how long the
opening took. Exits 1 if any stream failed."""
import asyncio
import json
import sys
import time
import urllib.request

URL, N, HOLD = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
HOST, PORT = URL.split("//")[1].split("/")[0].split(":")
PATH = "/" + URL.split("//")[1].split("/", 1)[1]


def initialize():
    body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "streams", "version": "0"}}})
    request = urllib.request.Request(URL, data=body.encode(), headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream"})
    with urllib.request.urlopen(request) as response:
        return response.headers["mcp-session-id"]


async def stream(session, alive, failed):
    try:
        reader, writer = await asyncio.open_connection(HOST, int(PORT))
        writer.write((f"GET {PATH} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
                      f"Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        if not head.startswith(b"HTTP/1.1 200"):
            failed.append(head[:40])
            return
        last = time.monotonic()
        alive.append(lambda: time.monotonic() - last)
        index = len(alive) - 1
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                failed.append(b"closed")
                return
            last = time.monotonic()
            alive[index] = (lambda t=last: time.monotonic() - t)
    except Exception as error:  # noqa: BLE001 - any failure counts
        failed.append(repr(error).encode())


async def main():
    session = initialize()
    alive, failed = [], []
    started = time.monotonic()
    tasks = [asyncio.create_task(stream(session, alive, failed)) for _ in range(N)]
    while len(alive) + len(failed) < N and time.monotonic() - started < 120:
        await asyncio.sleep(0.2)
    opened_in = time.monotonic() - started
    await asyncio.sleep(HOLD)
    # The demo upstream sends a keep-alive comment every second on each stream.
    delivering = sum(1 for since in alive if since() < 3)
    print(f"streams opened {len(alive)}/{N} in {opened_in:.1f} s; still delivering after {HOLD:.0f} s: {delivering}; failed {len(failed)}")
    if failed:
        print("first failures:", failed[:3])
    for task in tasks:
        task.cancel()
    sys.exit(0 if delivering == N and not failed else 1)


asyncio.run(main())
