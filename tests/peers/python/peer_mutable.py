"""Two clients of one server read doc://mutable, one of them changes it with set_mutable, both
read again; a few rounds. Prints every text each client read, as JSON.

usage: python peer_mutable.py URL MODE ROUNDS
MODE is "legacy" (handshake era: two sessions) or "2026-07-28" (stateless era).
"""
import asyncio
import json
import sys

from mcp.client import Client


async def read(client):
    return (await client.read_resource("doc://mutable")).contents[0].text


async def main(url, mode, rounds):
    seen = {"writer": [], "reader": []}
    # cache=None: the client's own SEP-2549 cache must not hide what the server answers.
    async with Client(url, mode=mode, cache=None) as writer, Client(url, mode=mode, cache=None) as reader:
        for n in range(rounds):
            seen["writer"].append(await read(writer))
            seen["reader"].append(await read(reader))
            await writer.call_tool("set_mutable", {"text": f"text of round {n}"})
            seen["writer"].append(await read(writer))
            seen["reader"].append(await read(reader))
    print(json.dumps(seen, indent=1))


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
