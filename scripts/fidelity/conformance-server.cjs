// A server for the server scenarios of the MCP conformance suite (npm
// @modelcontextprotocol/conformance 0.1.16), written for scripts/fidelity.sh.
//
// The suite expects an "everything" server with fixed tools, resources and prompts (named in
// each scenario's description: test_simple_text, test://static-text, test_simple_prompt, ...).
// The one the TypeScript SDK tests with lives in its repository (test/conformance/), not in any
// npm package, so this file implements the same fixtures from the scenario descriptions, on the
// TypeScript SDK 1.32.2 that scripts/setup-peers.sh installs with server-everything.
//
// usage: node conformance-server.cjs PORT NODE_MODULES_DIR
// Handshake era, sessions, SSE answers with priming events, an event store (SEP-1699
// resumability, retry 500 ms), DNS-rebinding protection (createMcpExpressApp on 127.0.0.1).
'use strict';
const path = require('path');
const { randomUUID } = require('crypto');

const port = Number(process.argv[2] || 3000);
const modules = process.argv[3];
const need = (name) => require(path.join(modules, name));
const { Server } = need('@modelcontextprotocol/sdk/dist/cjs/server/index.js');
const { StreamableHTTPServerTransport } = need('@modelcontextprotocol/sdk/dist/cjs/server/streamableHttp.js');
const { createMcpExpressApp } = need('@modelcontextprotocol/sdk/dist/cjs/server/express.js');
const T = need('@modelcontextprotocol/sdk/dist/cjs/types.js');

// 1x1 PNG and a minimal WAV (44-byte header, two bytes of silence).
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const WAV = Buffer.concat([
  Buffer.from('RIFF'), u32(38), Buffer.from('WAVEfmt '), u32(16), u16(1), u16(1), u32(8000), u32(16000),
  u16(2), u16(16), Buffer.from('data'), u32(2), Buffer.alloc(2),
]).toString('base64');
function u32(n) { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; }
function u16(n) { const b = Buffer.alloc(2); b.writeUInt16LE(n); return b; }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const text = (t) => ({ content: [{ type: 'text', text: t }] });
const noArgs = { type: 'object', properties: {} };

// Event store: ids "<stream>|<seq>", replay of one stream's later events.
function eventStore() {
  const events = [];
  let seq = 0;
  return {
    async storeEvent(streamId, message) {
      const id = `${streamId}|${String(++seq).padStart(8, '0')}`;
      events.push({ id, streamId, message });
      return id;
    },
    async replayEventsAfter(lastId, { send }) {
      const streamId = lastId.split('|')[0];
      for (const e of events) {
        if (e.streamId === streamId && e.id > lastId && e.message && Object.keys(e.message).length) {
          await send(e.id, e.message);
        }
      }
      return streamId;
    },
  };
}

const TOOLS = [
  { name: 'test_simple_text', description: 'Returns simple text', inputSchema: noArgs },
  { name: 'test_image_content', description: 'Returns an image', inputSchema: noArgs },
  { name: 'test_audio_content', description: 'Returns audio', inputSchema: noArgs },
  { name: 'test_embedded_resource', description: 'Returns an embedded resource', inputSchema: noArgs },
  { name: 'test_multiple_content_types', description: 'Returns text, image and resource', inputSchema: noArgs },
  { name: 'test_tool_with_logging', description: 'Logs three lines while running', inputSchema: noArgs },
  { name: 'test_tool_with_progress', description: 'Reports progress 0, 50, 100 of 100', inputSchema: noArgs },
  { name: 'test_error_handling', description: 'Always fails', inputSchema: noArgs },
  { name: 'test_reconnection', description: 'Closes its SSE stream before answering (SEP-1699)', inputSchema: noArgs },
  {
    name: 'test_sampling', description: 'Asks the client for a completion',
    inputSchema: { type: 'object', properties: { prompt: { type: 'string' } }, required: ['prompt'] },
  },
  {
    name: 'test_elicitation', description: 'Asks the user for input',
    inputSchema: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] },
  },
  { name: 'test_elicitation_sep1034_defaults', description: 'Elicitation with defaults (SEP-1034)', inputSchema: noArgs },
  { name: 'test_elicitation_sep1330_enums', description: 'Elicitation with enums (SEP-1330)', inputSchema: noArgs },
  {
    name: 'json_schema_2020_12_tool', description: 'Tool with JSON Schema 2020-12 features',
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: { address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } } },
      properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
      additionalProperties: false,
    },
  },
];

const SEP1034 = {
  type: 'object',
  properties: {
    name: { type: 'string', default: 'John Doe' },
    age: { type: 'integer', default: 30 },
    score: { type: 'number', default: 95.5 },
    status: { type: 'string', enum: ['active', 'inactive', 'pending'], default: 'active' },
    verified: { type: 'boolean', default: true },
  },
};
const SEP1330 = {
  type: 'object',
  properties: {
    untitledSingle: { type: 'string', enum: ['option1', 'option2', 'option3'] },
    titledSingle: {
      type: 'string',
      oneOf: [{ const: 'value1', title: 'First Option' }, { const: 'value2', title: 'Second Option' }],
    },
    legacyEnum: { type: 'string', enum: ['opt1', 'opt2', 'opt3'], enumNames: ['Option One', 'Option Two', 'Option Three'] },
    untitledMulti: { type: 'array', items: { type: 'string', enum: ['option1', 'option2', 'option3'] } },
    titledMulti: {
      type: 'array',
      items: { anyOf: [{ const: 'value1', title: 'First Choice' }, { const: 'value2', title: 'Second Choice' }] },
    },
  },
};

async function elicit(extra, message, requestedSchema) {
  const r = await extra.sendRequest({ method: 'elicitation/create', params: { message, requestedSchema } }, T.ElicitResultSchema);
  return text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content || {})}`);
}

async function callTool(req, extra) {
  const args = req.params.arguments || {};
  const log = (data) => extra.sendNotification({ method: 'notifications/message', params: { level: 'info', data } });
  switch (req.params.name) {
    case 'test_simple_text': return text('This is a simple text response for testing.');
    case 'test_image_content': return { content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] };
    case 'test_audio_content': return { content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] };
    case 'test_embedded_resource':
      return { content: [{ type: 'resource', resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' } }] };
    case 'test_multiple_content_types':
      return {
        content: [
          { type: 'text', text: 'Multiple content types test:' },
          { type: 'image', data: PNG, mimeType: 'image/png' },
          { type: 'resource', resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: '{"test":"data","value":123}' } },
        ],
      };
    case 'test_tool_with_logging':
      await log('Tool execution started'); await sleep(50);
      await log('Tool processing data'); await sleep(50);
      await log('Tool execution completed');
      return text('Tool with logging executed');
    case 'test_tool_with_progress': {
      const token = extra._meta && extra._meta.progressToken;
      for (const progress of [0, 50, 100]) {
        if (token !== undefined) {
          await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress, total: 100 } });
        }
        if (progress < 100) await sleep(50);
      }
      return text('Tool with progress executed');
    }
    case 'test_error_handling':
      return { isError: true, content: [{ type: 'text', text: 'This tool intentionally returns an error for testing' }] };
    case 'test_reconnection':
      if (extra.closeSSEStream) extra.closeSSEStream();
      await sleep(100);
      return text('Reconnection test completed');
    case 'test_sampling': {
      const r = await extra.sendRequest({
        method: 'sampling/createMessage',
        params: { messages: [{ role: 'user', content: { type: 'text', text: String(args.prompt) } }], maxTokens: 100 },
      }, T.CreateMessageResultSchema);
      return text(`LLM response: ${r.content && r.content.text}`);
    }
    case 'test_elicitation':
      return elicit(extra, String(args.message), {
        type: 'object',
        properties: {
          username: { type: 'string', description: "User's response" },
          email: { type: 'string', description: "User's email address" },
        },
        required: ['username', 'email'],
      });
    case 'test_elicitation_sep1034_defaults': return elicit(extra, 'Defaults for every primitive type', SEP1034);
    case 'test_elicitation_sep1330_enums': return elicit(extra, 'Every enum variant', SEP1330);
    case 'json_schema_2020_12_tool': return text(`json_schema_2020_12_tool called with ${JSON.stringify(args)}`);
    default: throw new T.McpError(T.ErrorCode.InvalidParams, `Unknown tool: ${req.params.name}`);
  }
}

const RESOURCES = [
  { uri: 'test://static-text', name: 'static-text', description: 'Static text', mimeType: 'text/plain' },
  { uri: 'test://static-binary', name: 'static-binary', description: 'Static PNG', mimeType: 'image/png' },
  { uri: 'test://watched-resource', name: 'watched-resource', description: 'Subscribable', mimeType: 'text/plain' },
];

function readResource(uri) {
  if (uri === 'test://static-text') return { uri, mimeType: 'text/plain', text: 'This is the content of the static text resource.' };
  if (uri === 'test://static-binary') return { uri, mimeType: 'image/png', blob: PNG };
  if (uri === 'test://watched-resource') return { uri, mimeType: 'text/plain', text: 'Watched resource content' };
  const m = /^test:\/\/template\/([^/]+)\/data$/.exec(uri);
  if (m) return { uri, mimeType: 'application/json', text: JSON.stringify({ id: m[1], templateTest: true, data: `Data for ID: ${m[1]}` }) };
  throw new T.McpError(-32002, `Resource not found: ${uri}`);
}

const PROMPTS = [
  { name: 'test_simple_prompt', description: 'A prompt without arguments' },
  {
    name: 'test_prompt_with_arguments', description: 'A prompt with two arguments',
    arguments: [{ name: 'arg1', description: 'First', required: true }, { name: 'arg2', description: 'Second', required: true }],
  },
  {
    name: 'test_prompt_with_embedded_resource', description: 'A prompt embedding a resource',
    arguments: [{ name: 'resourceUri', description: 'URI to embed', required: true }],
  },
  { name: 'test_prompt_with_image', description: 'A prompt with an image' },
];

function getPrompt(name, args) {
  const user = (content) => ({ role: 'user', content });
  switch (name) {
    case 'test_simple_prompt': return { messages: [user({ type: 'text', text: 'This is a simple prompt for testing.' })] };
    case 'test_prompt_with_arguments':
      return { messages: [user({ type: 'text', text: `Prompt with arguments: arg1='${args.arg1}', arg2='${args.arg2}'` })] };
    case 'test_prompt_with_embedded_resource':
      return {
        messages: [
          user({ type: 'resource', resource: { uri: args.resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' } }),
          user({ type: 'text', text: 'Please process the embedded resource above.' }),
        ],
      };
    case 'test_prompt_with_image':
      return { messages: [user({ type: 'image', data: PNG, mimeType: 'image/png' }), user({ type: 'text', text: 'Please analyze the image above.' })] };
    default: throw new T.McpError(T.ErrorCode.InvalidParams, `Unknown prompt: ${name}`);
  }
}

function newServer() {
  const s = new Server(
    { name: 'fidelity-conformance-server', version: '1.0.0' },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
    },
  );
  const subscriptions = new Set();
  s.setRequestHandler(T.ListToolsRequestSchema, async () => ({ tools: TOOLS }));
  s.setRequestHandler(T.CallToolRequestSchema, callTool);
  s.setRequestHandler(T.ListResourcesRequestSchema, async () => ({ resources: RESOURCES }));
  s.setRequestHandler(T.ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: [{ uriTemplate: 'test://template/{id}/data', name: 'template', description: 'Data by id', mimeType: 'application/json' }],
  }));
  s.setRequestHandler(T.ReadResourceRequestSchema, async (req) => ({ contents: [readResource(req.params.uri)] }));
  s.setRequestHandler(T.SubscribeRequestSchema, async (req) => { subscriptions.add(req.params.uri); return {}; });
  s.setRequestHandler(T.UnsubscribeRequestSchema, async (req) => { subscriptions.delete(req.params.uri); return {}; });
  s.setRequestHandler(T.ListPromptsRequestSchema, async () => ({ prompts: PROMPTS }));
  s.setRequestHandler(T.GetPromptRequestSchema, async (req) => getPrompt(req.params.name, req.params.arguments || {}));
  s.setRequestHandler(T.CompleteRequestSchema, async () => ({ completion: { values: [], total: 0, hasMore: false } }));
  return s;
}

const transports = new Map();
const app = createMcpExpressApp({ host: '127.0.0.1' });

app.post('/mcp', async (req, res) => {
  const sid = req.headers['mcp-session-id'];
  let transport = sid && transports.get(sid);
  if (!transport) {
    if (sid || !T.isInitializeRequest(req.body)) {
      res.status(sid ? 404 : 400).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Invalid or missing session ID' }, id: null });
      return;
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore: eventStore(),
      retryInterval: 500,
      onsessioninitialized: (id) => transports.set(id, transport),
    });
    transport.onclose = () => transport.sessionId && transports.delete(transport.sessionId);
    await newServer().connect(transport);
  }
  await transport.handleRequest(req, res, req.body);
});

for (const verb of ['get', 'delete']) {
  app[verb]('/mcp', async (req, res) => {
    const transport = transports.get(req.headers['mcp-session-id']);
    if (!transport) { res.status(400).send('Invalid or missing session ID'); return; }
    await transport.handleRequest(req, res);
  });
}

app.listen(port, '127.0.0.1', () => console.log(`conformance server on http://127.0.0.1:${port}/mcp`));
