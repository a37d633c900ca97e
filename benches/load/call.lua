-- wrk script: a stateless-era (2026-07-28) tools/call of the demo's echo tool, with its mirrored
-- headers. Tool calls are not cached unless a route opts in: every one goes upstream.
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},' ..
  '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "echo"

-- run.sh starts wrk from the repository root.
dofile("benches/load/report.lua")
