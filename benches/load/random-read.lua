-- wrk script: stateless-era resources/read of demo://kib/{1..KEYS}, chosen at random, so the
-- cache holds KEYS entries of 1 KiB each once warmed up.
local keys = tonumber(os.getenv("KEYS") or "1000")
local template = '{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"%s",' ..
  '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
local headers = {
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json, text/event-stream",
  ["MCP-Protocol-Version"] = "2026-07-28",
  ["Mcp-Method"] = "resources/read",
}
-- GZIP=1: the client accepts gzip (measures what compressing each hit costs).
if os.getenv("GZIP") == "1" then headers["Accept-Encoding"] = "gzip" end
-- SEQUENTIAL=1 walks the keys in order (to fill the cache quickly).
local sequential = os.getenv("SEQUENTIAL") == "1"
local next_key = 0
request = function()
  local key
  if sequential then
    next_key = next_key % keys + 1
    key = next_key
  else
    key = math.random(1, keys)
  end
  local uri = "demo://kib/" .. key
  headers["Mcp-Name"] = uri
  return wrk.format("POST", "/mcp", headers, string.format(template, uri))
end

-- run.sh starts wrk from the repository root.
dofile("benches/load/report.lua")
