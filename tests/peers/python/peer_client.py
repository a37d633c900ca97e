"""Drives an MCP server with the official Python SDK client and prints what it saw as JSON.

usage: python peer_client.py URL MODE TOOL JSON_ARGS
MODE is "legacy" (handshake era) or "2026-07-28" (stateless era).
"""
import asyncio
import json
import sys

from mcp.client import Client


async def main(url, mode, tool, args):
    out = {}
    # cache=None: the client's own SEP-2549 cache must not hide what the server answers.
    async with Client(url, mode=mode, cache=None) as c:
        out["resources"] = sorted(str(r.uri) for r in (await c.list_resources()).resources)
        out["templates"] = sorted(t.uri_template for t in (await c.list_resource_templates()).resource_templates)
        out["reads"] = {}
        for uri in out["resources"][:3]:
            x = (await c.read_resource(uri)).contents[0]
            out["reads"][uri] = {"text": getattr(x, "text", None), "blob": getattr(x, "blob", None)}
        out["tools"] = {t.name: t.annotations.model_dump(exclude_none=True) if t.annotations else None
                        for t in (await c.list_tools()).tools}
        res = await c.call_tool(tool, args)
        out["call"] = {"tool": tool, "text": res.content[0].text, "isError": res.is_error,
                       "structured": res.structured_content}
    print(json.dumps(out, indent=1, sort_keys=True))


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
