// Drives scripts/fidelity/conformance-server.cjs with the TypeScript SDK client (1.32.2, from
// tests/peers/node) and prints what the client saw, like flows.py: {"flows": {...}, "x-cache": {...}}.
// A second client implementation beside the Python one: request ids from 0, SEP-1699 resumption
// (priming event, stream closed mid-call, GET with Last-Event-ID) at protocol 2025-11-25, which
// the conformance suite's own server-sse-polling scenario does not reach (it asks as 2025-03-26).
//
// usage: node ts-flows.cjs URL NODE_MODULES_DIR
'use strict';
const path = require('path');

const [url, modules] = process.argv.slice(2);
const sdk = (p) => require(path.join(modules, '@modelcontextprotocol/sdk/dist/cjs', p));
const { Client } = sdk('client/index.js');
const { StreamableHTTPClientTransport } = sdk('client/streamableHttp.js');
const T = sdk('types.js');

const flows = {};
const xcache = {};
let current = null;

async function noteFetch(input, init) {
  const res = await fetch(input, init);
  const v = res.headers.get('x-cache');
  if (v && current) {
    let method = '-';
    try { method = JSON.parse(init && init.body).method || '-'; } catch {}
    (xcache[current] = xcache[current] || []).push(`${(init && init.method) || 'GET'} ${method} ${v}`);
  }
  return res;
}

async function flow(name, fn) {
  current = name;
  try {
    flows[name] = await fn();
  } catch (e) {
    flows[name] = { error: e.constructor.name, code: e.code === undefined ? null : e.code, message: String(e.message).slice(0, 300) };
  }
  current = null;
}

function connect(token) {
  const client = new Client({ name: 'fidelity-ts', version: '1.0.0' }, { capabilities: { sampling: {}, elicitation: {} } });
  client.setRequestHandler(T.CreateMessageRequestSchema, async () => ({
    role: 'assistant', content: { type: 'text', text: 'sampled' }, model: 'm', stopReason: 'endTurn',
  }));
  client.setRequestHandler(T.ElicitRequestSchema, async () => ({ action: 'accept', content: { username: 'u', email: 'u@example.com' } }));
  const logs = [];
  client.setNotificationHandler(T.LoggingMessageNotificationSchema, (n) => { logs.push(n.params.data); });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    fetch: noteFetch,
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  return { client, transport, logs };
}

(async () => {
  const { client, transport, logs } = connect('fidelity-a');
  await flow('connect', async () => {
    await client.connect(transport);
    return { protocol: transport.protocolVersion, server: client.getServerVersion(), capabilities: Object.keys(client.getServerCapabilities()).sort() };
  });
  await flow('tools/list', async () => (await client.listTools()).tools.map((t) => t.name));
  await flow('resources/list', async () => client.listResources());
  await flow('resources/templates/list', async () => client.listResourceTemplates());
  for (const uri of ['test://static-text', 'test://static-binary', 'test://template/123/data']) {
    for (const i of [1, 2]) await flow(`read ${uri} #${i}`, async () => client.readResource({ uri }));
  }
  await flow('read test://nope (error)', async () => client.readResource({ uri: 'test://nope' }));
  await flow('prompts/list', async () => client.listPrompts());
  await flow('prompts/get test_prompt_with_arguments', async () =>
    client.getPrompt({ name: 'test_prompt_with_arguments', arguments: { arg1: 'a', arg2: 'b' } }));
  await flow('completion/complete', async () =>
    client.complete({ ref: { type: 'ref/prompt', name: 'test_prompt_with_arguments' }, argument: { name: 'arg1', value: 'x' } }));
  await flow('logging/setLevel', async () => client.setLoggingLevel('debug'));
  for (const i of [1, 2]) await flow(`call test_simple_text #${i}`, async () => client.callTool({ name: 'test_simple_text', arguments: {} }));
  for (const i of [1, 2]) {
    await flow(`call test_tool_with_progress #${i} (progress)`, async () => {
      const progress = [];
      const r = await client.callTool({ name: 'test_tool_with_progress', arguments: {} }, undefined,
        { onprogress: (p) => progress.push([p.progress, p.total]) });
      return { r, progress };
    });
  }
  for (const i of [1, 2]) {
    await flow(`call test_tool_with_logging #${i} (logs)`, async () => {
      logs.length = 0;
      const r = await client.callTool({ name: 'test_tool_with_logging', arguments: {} });
      await new Promise((res) => setTimeout(res, 200));
      return { r, logs: [...logs] };
    });
  }
  await flow('call test_error_handling', async () => client.callTool({ name: 'test_error_handling', arguments: {} }));
  await flow('call test_sampling (server asks the client)', async () => client.callTool({ name: 'test_sampling', arguments: { prompt: 'p' } }));
  await flow('call test_elicitation (server asks the user)', async () => client.callTool({ name: 'test_elicitation', arguments: { message: 'm' } }));
  await flow('call test_reconnection (SEP-1699: stream closed, GET with Last-Event-ID)', async () =>
    client.callTool({ name: 'test_reconnection', arguments: {} }));
  await flow('ping', async () => client.ping());
  const session = transport.sessionId;
  await flow('close (DELETE)', async () => { await transport.terminateSession(); await client.close(); return {}; });
  // Raw HTTP, as a client whose session ended would meet it: the read it made before, on the
  // ended session, and with no session header.
  const raw = async (sid) => {
    const headers = {
      'Content-Type': 'application/json', Accept: 'application/json, text/event-stream',
      Authorization: 'Bearer fidelity-a', 'MCP-Protocol-Version': transport.protocolVersion || '2025-11-25',
    };
    if (sid) headers['Mcp-Session-Id'] = sid;
    const res = await noteFetch(url, {
      method: 'POST', headers,
      body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'resources/read', params: { uri: 'test://static-text' } }),
    });
    let text = await res.text();
    if ((res.headers.get('content-type') || '').includes('text/event-stream')) {
      const datas = text.split(/\r?\n/).filter((l) => l.startsWith('data:') && l.slice(5).trim()).map((l) => l.slice(5).trim());
      text = datas.length ? datas[datas.length - 1] : '';
    }
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = text.slice(0, 200); }
    const out = { status: res.status };
    if (body && body.result) out.result = body.result;
    else if (body && body.error) out.error = { code: body.error.code, message: body.error.message };
    else if (body) out.body = body;
    return out;
  };
  await flow('ended session: read after DELETE (raw HTTP)', async () => raw(session));
  await flow('no session: read without a session header (raw HTTP)', async () => raw(null));
  console.log(JSON.stringify({ flows, 'x-cache': xcache }, null, 1));
})().catch((e) => { console.log(JSON.stringify({ flows: { '(client)': { error: 'crashed', code: null, message: String(e) } } })); });
