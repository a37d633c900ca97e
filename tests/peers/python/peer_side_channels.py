"""Calls one tool twice in one session with the official Python SDK client and reports, per call,
what reached the client beside the result: progress and log notifications, and the server's
requests for the client's roots.

usage: python peer_side_channels.py URL MODE TOOL JSON_ARGS ROOT_URI
"""
import asyncio
import json
import sys

import mcp_types as types
from mcp.client import Client


async def main(url, mode, tool, args, root):
    seen = {"logs": 0, "roots_asked": 0}

    async def on_log(params):
        seen["logs"] += 1

    async def on_roots(context):
        seen["roots_asked"] += 1
        return types.ListRootsResult(roots=[types.Root(uri=root, name="caller")])

    calls = []
    async with Client(url, mode=mode, cache=None, logging_callback=on_log, list_roots_callback=on_roots) as c:
        await c.list_tools()  # as clients do: it also tells a proxy which tools are read-only
        for _ in range(2):
            seen.update(logs=0, roots_asked=0)
            progress = []

            async def on_progress(value, total, message):
                progress.append(value)

            result = await c.call_tool(tool, args, progress_callback=on_progress)
            # Notifications sent before the result are handled first; a short pause lets any
            # stragglers of a slow handler land before the counts are read.
            await asyncio.sleep(0.1)
            calls.append({"text": result.content[0].text, "progress": len(progress), **seen})
    print(json.dumps(calls, indent=1, sort_keys=True))


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]))
