// Preloaded into the conformance suite (node --import): notes the x-cache header of every answer
// its fetch() gets, with the JSON-RPC method asked and the time, one JSON line each in
// $FIDELITY_XCACHE_LOG, so compare.py can say which scenario the cache answered.
import { appendFileSync } from 'node:fs';

const file = process.env.FIDELITY_XCACHE_LOG;
const fetch0 = globalThis.fetch;
globalThis.fetch = async function fetch(input, init) {
  const res = await fetch0(input, init);
  const xcache = res.headers.get('x-cache');
  if (file && xcache) {
    let method = '-';
    try {
      method = JSON.parse(init && init.body).method || '-';
    } catch {}
    const http = (init && init.method) || 'GET';
    appendFileSync(file, JSON.stringify({ t: Date.now() / 1000, http, method, xcache }) + '\n');
  }
  return res;
};
