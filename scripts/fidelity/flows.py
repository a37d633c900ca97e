"""Drives an MCP server through a fixed list of flows with the official Python SDK client
(mcp 2.3.0) and prints what the client saw, one JSON member per flow, for scripts/fidelity.sh.

usage: python flows.py URL PEER MODE
  PEER  everything (@modelcontextprotocol/server-everything) | python (tests/peers/python/peer_server.py)
  MODE  legacy (initialize handshake) | auto (server/discover probe: the 2026-07-28 era where the
        server speaks it) | 2026-07-28

The main session sends `Authorization: Bearer fidelity-a` (a user with a credential: what lets a
cache answer a later session); a second one `Bearer fidelity-b`. Values that legitimately change
from run to run are printed as they are; compare.py masks them. Every flow catches its own
failure and records it, so one broken flow never hides the others.
"""
import asyncio
import base64
import warnings
import hashlib
import json
import sys
import time

import httpx2
import mcp_types as types
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

warnings.simplefilter("ignore")  # handshake-era methods are deprecated in 2.3.0: used on purpose
URL, PEER, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
OUT = {}
TIMES = {}
XCACHE = {}  # flow -> ["method HIT", ...]: the proxy's x-cache header on each answer the flow got
CURRENT = [None]


def digest(s):
    if s is None:
        return None
    b = s.encode() if isinstance(s, str) else s
    return f"{len(b)}:{hashlib.sha256(b).hexdigest()[:16]}"


def dump(x):
    """A result as plain JSON (by alias, no None), as the client's application would see it."""
    return x.model_dump(mode="json", by_alias=True, exclude_none=True)


def content(blocks):
    out = []
    for b in blocks:
        d = dump(b)
        for k in ("data", "blob"):
            if k in d:
                d[k] = digest(d[k])
        if "resource" in d and isinstance(d["resource"], dict) and "blob" in d["resource"]:
            d["resource"]["blob"] = digest(d["resource"]["blob"])
        out.append(d)
    return out


def read_out(res):
    out = []
    for c in res.contents:
        d = dump(c)
        if "blob" in d:
            d["blob_text"] = base64.b64decode(d.pop("blob")).decode("utf-8", "replace")
        out.append(d)
    return out


def error_of(e):
    code = getattr(getattr(e, "error", None), "code", None)
    return {"error": type(e).__name__, "code": code, "message": str(e)[:300]}


async def flow(name, coro):
    """Runs one flow, keeps what it saw and when (compare.py finds its lines in the proxy's log)."""
    start = time.time()
    CURRENT[0] = name
    try:
        OUT[name] = await coro
    except BaseException as e:  # noqa: BLE001 - record any failure, go on
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        OUT[name] = error_of(e)
    TIMES[name] = [start, time.time()]
    CURRENT[0] = None


async def note_x_cache(response):
    value = response.headers.get("x-cache")
    if value is None or CURRENT[0] is None:
        return
    try:
        method = json.loads(response.request.content or b"{}").get("method", "-")
    except (ValueError, AttributeError):
        method = "-"
    XCACHE.setdefault(CURRENT[0], []).append(f"{response.request.method} {method} {value}")


def client(token, **kw):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60),
                              event_hooks={"response": [note_x_cache]})
    return Client(streamable_http_client(URL, http_client=http), mode=kw.pop("mode", MODE), cache=None, **kw)


class Seen:
    def __init__(self):
        self.logs, self.updated, self.roots_asked = [], [], 0

    async def on_log(self, params):
        self.logs.append(params.data if isinstance(params.data, str) else json.dumps(params.data, sort_keys=True))

    async def on_message(self, message):
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))

    async def on_roots(self, context):
        self.roots_asked += 1
        return types.ListRootsResult(roots=[types.Root(uri="file:///fidelity", name="fidelity")])


async def call(c, name, args, seen=None):
    progress = []

    async def on_progress(value, total, message):
        progress.append([value, total])

    if seen:
        seen.logs.clear()
        seen.roots_asked = 0
    res = await c.call_tool(name, args, progress_callback=on_progress)
    await asyncio.sleep(0.1)  # stragglers of a slow handler land before counting
    out = {"content": content(res.content), "isError": bool(res.is_error)}
    if res.structured_content is not None:
        out["structured"] = res.structured_content
    if progress:
        out["progress"] = progress
    if seen and seen.logs:
        out["logs"] = list(seen.logs)
    if seen and seen.roots_asked:
        out["roots_asked"] = seen.roots_asked
    return out


async def connect_facts(c):
    caps = dump(c.server_capabilities)
    return {"protocol": c.protocol_version, "server": c.server_info.name if c.server_info else None,
            "capabilities": sorted(caps)}


async def lists(c):
    res = [dump(r) for r in (await c.list_resources()).resources]
    tpl = [dump(t) for t in (await c.list_resource_templates()).resource_templates]
    return {"resources": res, "templates": tpl}


async def tools(c):
    return [{"name": t.name, "annotations": dump(t.annotations) if t.annotations else None,
             "schema": digest(json.dumps(t.input_schema, sort_keys=True))}
            for t in (await c.list_tools()).tools]


async def read(c, uri):
    return read_out(await c.read_resource(uri))


async def everything():
    seen = Seen()
    async with client("fidelity-a", logging_callback=seen.on_log, message_handler=seen.on_message) as c:
        await flow("connect", connect_facts(c))
        await flow("lists", lists(c))
        docs = OUT["lists"].get("resources") or []
        await flow("read static documents", asyncio.gather(*[read(c, d["uri"]) for d in docs]))
        await flow("read dynamic text/1", read(c, "demo://resource/dynamic/text/1"))
        await flow("read dynamic blob/2", read(c, "demo://resource/dynamic/blob/2"))
        await flow("read unknown uri (error)", read(c, "demo://nope"))
        await flow("read dynamic text/0 (error)", read(c, "demo://resource/dynamic/text/0"))
        await flow("tools/list", tools(c))
        await flow("prompts/list", _prompts(c))
        await flow("prompts/get simple-prompt", _prompt(c, "simple-prompt", None))
        await flow("prompts/get args-prompt", _prompt(c, "args-prompt", {"city": "Paris", "state": "TX"}))
        await flow("completion/complete", _complete(c))
        await flow("ping", _ping(c))
        await flow("logging/setLevel", _set_level(c, "debug"))
        for i in (1, 2):
            await flow(f"call echo #{i}", call(c, "echo", {"message": "fidelity"}))
        await flow("call get-sum", call(c, "get-sum", {"a": 2, "b": 40}))
        await flow("call get-structured-content", call(c, "get-structured-content", {"location": "New York"}))
        await flow("call get-tiny-image", call(c, "get-tiny-image", {}))
        await flow("call get-annotated-message", call(c, "get-annotated-message", {"messageType": "error", "includeImage": False}))
        await flow("call get-resource-reference", call(c, "get-resource-reference", {"resourceType": "Text", "resourceId": 3}))
        await flow("call get-resource-links", call(c, "get-resource-links", {"count": 2}))
        await flow("call unknown tool", call(c, "no-such-tool", {}))
        for i in (1, 2):
            await flow(f"call trigger-long-running-operation #{i} (progress)",
                       call(c, "trigger-long-running-operation", {"duration": 1, "steps": 2}, seen))
        await flow("subscribe, update, re-read", _subscribe(c, seen))
    # A client declaring sampling, elicitation and roots: server-everything lists more tools.
    rich = Seen()

    async def sampling(context, params):
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="ok"), model="m")

    async def elicitation(context, params):
        return types.ElicitResult(action="decline")

    async with client("fidelity-a", list_roots_callback=rich.on_roots, sampling_callback=sampling,
                      elicitation_callback=elicitation) as c:
        await flow("tools/list (client declares sampling, elicitation, roots)", tools(c))
    async with client("fidelity-a", mode="auto") as c:
        await flow("connect (mode auto: server/discover probe, then initialize)", connect_facts(c))
    await flow("ended session: read after DELETE, read without session (raw HTTP)",
               ended_session("demo://resource/static/document/startup.md"))


async def _whole_read(c, uri):
    return dump(await c.read_resource(uri))


async def _prompts(c):
    return [dump(p) for p in (await c.list_prompts()).prompts]


async def _prompt(c, name, args):
    return dump(await c.get_prompt(name, args))


async def _complete(c):
    res = await c.complete(types.PromptReference(type="ref/prompt", name="completable-prompt"),
                           {"name": "department", "value": "E"})
    return dump(res)


async def _ping(c):
    return dump(await c.send_ping())


async def _set_level(c, level):
    return dump(await c.set_logging_level(level))


async def _subscribe(c, seen):
    """Subscribe to a dynamic resource, have server-everything announce updates, wait for one on
    the GET stream, read again: the second read must be fresh (a proxy must drop its entry)."""
    uri = "demo://resource/dynamic/text/1"
    first = (await read(c, uri))[0]["text"]
    await asyncio.sleep(1.1)  # the text names the second it was made: let the clock move on
    seen.updated.clear()
    await c.subscribe_resource(uri)
    toggled = await call(c, "toggle-subscriber-updates", {})
    deadline = time.monotonic() + 12
    while uri not in seen.updated and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    got = uri in seen.updated
    await call(c, "toggle-subscriber-updates", {})
    await c.unsubscribe_resource(uri)
    second = (await read(c, uri))[0]["text"]
    return {"toggle": toggled, "update notification": got, "re-read differs from first read": first != second}


def answer(response):
    """A raw answer as a client reads it: status, and the result's presence or the error."""
    out = {"status": response.status_code}
    text = response.text
    if "text/event-stream" in response.headers.get("content-type", ""):
        datas = [line[5:].strip() for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
        text = datas[-1] if datas else ""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = text[:200]
    if isinstance(body, dict) and "result" in body:
        out["result"] = body["result"]
    elif isinstance(body, dict) and "error" in body:
        out["error"] = {"code": body["error"].get("code"), "message": body["error"].get("message")}
    elif body:
        out["body"] = body
    return out


async def ended_session(uri):
    """Raw HTTP, as a client whose session ended (it sent DELETE; or its server restarted) would
    meet it: a read on the ended session, and one without any session."""
    base = {"Authorization": "Bearer fidelity-a", "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
    read = {"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": uri}}
    async with httpx2.AsyncClient(timeout=30, event_hooks={"response": [note_x_cache]}) as h:
        r = await h.post(URL, headers=base, json=init)
        session = dict(base)
        if r.headers.get("mcp-session-id"):
            session["Mcp-Session-Id"] = r.headers["mcp-session-id"]
        await h.post(URL, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        live = answer(await h.post(URL, headers=session, json=read))
        deleted = (await h.delete(URL, headers=session)).status_code
        after = answer(await h.post(URL, headers=session, json=read))
        without = answer(await h.post(URL, headers=base, json=read))
    return {"read on the live session": live, "DELETE": deleted, "same read on the deleted session": after,
            "same read with no session header": without}


async def python_peer():
    seen = Seen()
    async with client("fidelity-a", logging_callback=seen.on_log, list_roots_callback=seen.on_roots,
                      log_level="debug") as c:
        await flow("connect", connect_facts(c))
        await flow("lists", lists(c))
        await flow("read docs://readme", read(c, "docs://readme"))
        await flow("read docs://readme (whole result: ttlMs, cacheScope, _meta)", _whole_read(c, "docs://readme"))
        await flow("read docs://page/7", read(c, "docs://page/7"))
        await flow("read docs://mine/1 (identity a)", read(c, "docs://mine/1"))
        await flow("read docs://nope (error)", read(c, "docs://nope"))
        await flow("tools/list", tools(c))
        if MODE == "legacy":
            await flow("ping", _ping(c))
        for i in (1, 2):
            await flow(f"call add #{i}", call(c, "add", {"a": 2, "b": 40}))
        await flow("call add (other arguments)", call(c, "add", {"a": 1, "b": 1}))
        for i in (1, 2):
            await flow(f"call countdown #{i} (progress, logs)", call(c, "countdown", {"steps": 3}, seen))
        for i in (1, 2):
            await flow(f"call caller_roots #{i} (server asks the client)", call(c, "caller_roots", {}, seen))
        await flow("call unknown tool", call(c, "no-such-tool", {}))
        await flow("call reads (upstream read counter)", call(c, "reads", {}))
    async with client("fidelity-b") as c:
        await flow("read docs://mine/1 (identity b)", read(c, "docs://mine/1"))
    if MODE == "legacy":
        await flow("ended session: read after DELETE, read without session (raw HTTP)", ended_session("docs://readme"))


asyncio.run(everything() if PEER == "everything" else python_peer())
print(json.dumps({"flows": OUT, "times": TIMES, "x-cache": XCACHE}, indent=1, sort_keys=True))
