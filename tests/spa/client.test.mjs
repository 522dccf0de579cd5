// Unit tests of examples/spa/token-handler-client.js in Node (no browser): what it sends, when it
// refreshes, and what a session_expired answer does to its CSRF value. The browser test
// (tests/e2e/client.mjs) covers it in chromium against the real service.
// Run: node --test tests/spa/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '../../examples/spa/token-handler-client.js';

globalThis.location ??= { href: 'https://www.example.test/app' };

/** A client whose fetch answers from `answers` in order and records every call. */
function setup(answers) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url: String(url), method: init.method ?? 'GET', csrf: new Headers(init.headers).get('x-th-csrf') });
    const next = answers.shift();
    assert.ok(next, `an unexpected call to ${url}`);
    const body = next.body === undefined ? null : JSON.stringify(next.body);
    return new Response(body, { status: next.status, headers: { 'content-type': 'application/json' } });
  };
  const stored = new Map([['token-handler-csrf', 'csrf-1']]);
  const storage = {
    getItem: (k) => stored.get(k) ?? null,
    setItem: (k, v) => stored.set(k, v),
    removeItem: (k) => stored.delete(k),
  };
  const expired = [];
  const client = createClient({ fetch, storage, channel: null, onSessionExpired: (d) => expired.push(d) });
  return { client, calls, stored, expired };
}

test('the CSRF header goes with writes only', async () => {
  const { client, calls } = setup([{ status: 200, body: {} }, { status: 200, body: {} }]);
  await client.fetch('/api/orders');
  await client.fetch('/api/orders', { method: 'POST' });
  assert.deepEqual(calls.map((c) => [c.method, c.csrf]), [['GET', null], ['POST', 'csrf-1']]);
});

test('token_expired refreshes the session the call named, once, and retries once', async () => {
  const { client, calls } = setup([
    { status: 401, body: { code: 'token_expired' } },
    { status: 204 },
    { status: 200, body: { sub: 'bob' } },
  ]);
  const response = await client.fetch('/oauth-agent/userInfo?provider=drive');
  assert.equal(response.status, 200);
  assert.deepEqual(calls.map((c) => `${c.method} ${c.url}`), [
    'GET /oauth-agent/userInfo?provider=drive',
    'POST /oauth-agent/refresh?provider=drive',
    'GET /oauth-agent/userInfo?provider=drive',
  ]);
  assert.equal(calls[1].csrf, 'csrf-1');
});

test('token_expired twice does not loop', async () => {
  const { client, calls } = setup([
    { status: 401, body: { code: 'token_expired' } },
    { status: 204 },
    { status: 401, body: { code: 'token_expired' } },
  ]);
  assert.equal((await client.fetch('/oauth-agent/userInfo')).status, 401);
  assert.deepEqual(calls.map((c) => c.url), ['/oauth-agent/userInfo', '/oauth-agent/refresh', '/oauth-agent/userInfo']);
});

test('a session that is over drops the CSRF value and tells the app once', async () => {
  const { client, stored, expired } = setup([
    { status: 401, body: { code: 'session_expired' } },
    { status: 401, body: { code: 'session_expired' } },
  ]);
  await client.fetch('/api/orders');
  await client.fetch('/api/orders');
  assert.equal(stored.get('token-handler-csrf'), undefined);
  assert.deepEqual(expired, [{ code: 'session_expired' }]);
});

test("one provider's ended session keeps the CSRF value for the others", async () => {
  const { client, stored, expired, calls } = setup([
    { status: 401, body: { code: 'session_expired', provider: 'drive' } },
    { status: 200, body: {} },
  ]);
  assert.equal((await client.fetch('/drive-api/files', { method: 'POST' })).status, 401);
  assert.deepEqual(expired, [{ code: 'session_expired', provider: 'drive' }]);
  assert.equal(stored.get('token-handler-csrf'), 'csrf-1');
  await client.fetch('/main-api/orders', { method: 'POST' });
  assert.equal(calls[1].csrf, 'csrf-1');
});
