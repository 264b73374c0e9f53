// The shared HTTP answers (tests/vectors/http_answers.json, written by hand; the Python
// package's ASGI and WSGI middlewares answer the same file in
// clients/python/tests/test_http_answers.py): requireToken in remote mode on a real Express
// app, in front of a real `authority serve` or of a port where none listens.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { after, before, test } from 'node:test';

import express from 'express';

import { requireToken } from '../src/index.js';
import { Authority, missingAuthority, quietLog } from './support/authority.js';

const { cases } = JSON.parse(readFileSync(new URL('../../../tests/vectors/http_answers.json', import.meta.url), 'utf8'));
const skip = missingAuthority();
let authority;
let unreachable;
const apps = new Map();
before(async () => {
  if (skip) return;
  authority = await new Authority().start();
  // A port that was free a moment ago, closed again: nothing listens there.
  const holder = createServer().listen(0, '127.0.0.1');
  await once(holder, 'listening');
  unreachable = `127.0.0.1:${holder.address().port}`;
  holder.close();
});
after(async () => {
  for (const app of apps.values()) await app.close();
  await authority?.close();
});

/** The app for a case's configuration, served on first use. */
async function appFor(c) {
  const key = JSON.stringify([c.authority, c.options]);
  if (!apps.has(key)) {
    const target = c.authority === 'running' ? authority.target : unreachable;
    const auth = requireToken({ target, audience: 'api', log: quietLog(), ...c.options });
    await auth.ready;
    const server = express().get('/me', auth, (req, res) => res.json({ reached: true })).listen(0, '127.0.0.1');
    await once(server, 'listening');
    apps.set(key, { port: server.address().port, close: async () => { server.close(); await auth.close(); } });
  }
  return apps.get(key);
}

/** A GET written by hand, its header lines exactly as the case gives them. */
async function answerTo(port, c) {
  const target = c.query === '' ? '/me' : `/me?${c.query}`;
  const lines = c.headers.map(([name, value]) => `${name}: ${value}`);
  const socket = connect(port, '127.0.0.1');
  socket.write([`GET ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close', ...lines, '', ''].join('\r\n'));
  let text = '';
  for await (const chunk of socket) text += chunk;
  const [head, body] = text.split('\r\n\r\n');
  const header = (name) => new RegExp(`^${name}: (.*)$`, 'im').exec(head)?.[1] ?? null;
  return {
    status: Number(head.split(' ')[1]),
    www_authenticate: header('www-authenticate'),
    retry_after: header('retry-after'),
    cache_control: header('cache-control'),
    body: JSON.parse(body),
  };
}

test('the vectors cover every kind of answer', () => {
  assert.deepEqual(new Set(cases.map((c) => c.expected.status)), new Set([400, 401, 503]));
  assert.ok(cases.some((c) => 'realm' in c.options) && cases.some((c) => c.authority === 'unreachable'));
});

for (const c of cases) {
  test(`the shared answer: ${c.name}`, { skip }, async () => {
    const app = await appFor(c);
    assert.deepEqual(await answerTo(app.port, c), c.expected);
  });
}
