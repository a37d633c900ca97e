-- wrk script: stateless-era resources/read of demo://kib/{1..KEYS}, chosen at random, so the
-- cache holds KEYS entries of 1 KiB each once warmed up.
local keys = tonumber(os.getenv("KEYS") or "1000")
-- SDK_META=1: the `_meta` a stateless-era SDK client sends (its information and capabilities,
-- which are part of the cache key), not only the protocol version.
local sdk_meta = os.getenv("SDK_META") == "1" and
  ',"io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"2.3.0"},' ..
  '"io.modelcontextprotocol/clientCapabilities":{"sampling":{},"elicitation":{"form":{}},"roots":{"listChanged":true}}'
  or ''
local template = '{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"%s",' ..
  '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"' .. sdk_meta .. '}}}'
local headers = {
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json, text/event-stream",
  ["MCP-Protocol-Version"] = "2026-07-28",
  ["Mcp-Method"] = "resources/read",
}
-- AUTHORIZATION: sent as the Authorization header (a bearer token, for [route.auth]).
if os.getenv("AUTHORIZATION") then headers["Authorization"] = os.getenv("AUTHORIZATION") end
-- GZIP=1: the client accepts gzip (measures what compressing each hit costs).
if os.getenv("GZIP") == "1" then headers["Accept-Encoding"] = "gzip" end
-- SEQUENTIAL=1 walks the keys in order (to fill the cache quickly): with STRIDE=n wrk threads,
-- thread i takes keys i+1, i+1+n, ...
local sequential = os.getenv("SEQUENTIAL") == "1"
local stride = tonumber(os.getenv("STRIDE") or "1")
local threads_started = 0
setup = function(thread)
  thread:set("first_key", threads_started)
  threads_started = threads_started + 1
end
local next_key = nil
request = function()
  local key
  if sequential then
    next_key = next_key or first_key or 0
    key = next_key % keys + 1
    next_key = next_key + stride
  else
    key = math.random(1, keys)
  end
  local uri = "demo://kib/" .. key
  headers["Mcp-Name"] = uri
  return wrk.format("POST", wrk.path, headers, string.format(template, uri))
end

-- run.sh starts wrk from the repository root.
dofile("benches/load/report.lua")
