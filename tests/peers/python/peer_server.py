"""An MCP server on the official Python SDK, for end-to-end tests.

usage: python peer_server.py PORT [--json] [--stateless] [--hints public|private|none]
"""
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations

port = int(sys.argv[1])
hints = sys.argv[sys.argv.index("--hints") + 1] if "--hints" in sys.argv else "none"
options = {}
if hints != "none":
    from mcp.server.caching import CacheHint

    options["cache_hints"] = {
        method: CacheHint(ttl_ms=60000, scope=hints)
        for method in ("resources/read", "resources/list", "tools/list")
    }
mcp = MCPServer("peer", **options)
READS = {"n": 0}


@mcp.resource("docs://readme", name="readme", mime_type="text/plain")
def readme() -> str:
    READS["n"] += 1
    return "hello from the static readme"


@mcp.resource("docs://page/{n}", name="page", mime_type="text/plain")
def page(n: str) -> str:
    READS["n"] += 1
    return f"page {n}"


@mcp.resource("docs://mine/{n}", name="mine", mime_type="text/plain")
def mine(n: str, ctx: Context) -> str:
    """A page of the caller's own: it names the credential it was read with."""
    READS["n"] += 1
    headers = ctx.headers or {}
    return f"page {n} of {headers.get('authorization', 'nobody')}"


READ_ONLY = ToolAnnotations(readOnlyHint=True, idempotentHint=True, destructiveHint=False, openWorldHint=False)


@mcp.tool(annotations=READ_ONLY)
def add(a: int, b: int) -> int:
    return a + b


@mcp.tool(annotations=READ_ONLY)
async def countdown(steps: int, ctx: Context) -> str:
    """Reports progress and logs a line at each step (both beside the result, on its stream)."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps)
        await ctx.info(f"step {step} of {steps}")
    return f"counted {steps}"


@mcp.tool(annotations=READ_ONLY)
async def caller_roots(ctx: Context) -> str:
    """Asks the caller for its roots (handshake era: a request on the session's GET stream)."""
    roots = await ctx.session.list_roots()
    return ",".join(str(root.uri) for root in roots.roots)


MUTABLE = {"text": "the first text"}


@mcp.resource("doc://mutable", name="mutable", mime_type="text/plain")
def mutable() -> str:
    """A document the set_mutable tool changes."""
    return MUTABLE["text"]


@mcp.tool()
def set_mutable(text: str) -> str:
    """Changes doc://mutable and tells nobody (no notification, no hint): a silent server."""
    MUTABLE["text"] = text
    return "set"


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
def reads() -> int:
    """How many resource reads reached this server."""
    return READS["n"]


WATCHED = {"text": "the first text"}


@mcp.resource("docs://watched", name="watched", mime_type="text/plain")
def watched() -> str:
    """A resource whose text the `rewrite` tool changes (not counted in READS)."""
    return WATCHED["text"]


@mcp.tool()
async def rewrite(text: str, ctx: Context) -> str:
    """Changes docs://watched and announces it to the subscriptions/listen streams naming it."""
    WATCHED["text"] = text
    await ctx.notify_resource_updated("docs://watched")
    return "rewritten"


mcp.run("streamable-http", host="127.0.0.1", port=port,
        json_response="--json" in sys.argv, stateless_http="--stateless" in sys.argv)
