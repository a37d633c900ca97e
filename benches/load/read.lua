-- wrk script: a stateless-era (2026-07-28) resources/read POST, with its mirrored headers.
local uri = os.getenv("MCP_URI") or "demo://docs/1"
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"' .. uri ..
  '","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "resources/read"
wrk.headers["Mcp-Name"] = uri

-- PAUSE_MS=n: each connection waits n ms after every answer, holding the load below what any
-- of the proxies saturates at, so latency is measured without queueing.
local pause = tonumber(os.getenv("PAUSE_MS") or "0")
if pause > 0 then
  delay = function() return pause end
end

-- run.sh starts wrk from the repository root.
dofile("benches/load/report.lua")
