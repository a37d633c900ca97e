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

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50=%.3f p99=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors))
end
