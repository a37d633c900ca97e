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

-- One machine-readable line: requests/s, p50, p99 (ms), errors.
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50=%.3f p99=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors))
end
