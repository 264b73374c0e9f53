// The shared query vectors (tests/vectors/queries.json, written by hand; the Python package
// checks the same file in tests/test_vectors.py): the Express middleware reads a token in
// the query string exactly as the Python package's HTTP middlewares do. A regression test:
// Node decoded each %XX escape alone, as a Latin-1 character, where Python reads escapes as
// UTF-8, so `access_to%E2%84%AAen` (a KELVIN SIGN, whose lower case is k) passed in Node
// and was refused in Python.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';

import express from 'express';

import { MISSING_TEXT, requireToken } from '../src/index.js';
import { queryNames, readRequest } from '../src/access.js';
import { quietLog } from './support/authority.js';

const { cases } = JSON.parse(readFileSync(new URL('../../../tests/vectors/queries.json', import.meta.url), 'utf8'));
const NO_TOKEN = { status: 401, error: 'unauthorized', error_description: MISSING_TEXT };

let app;
before(async () => {
  // Remote mode with no token to check never dials its target.
  const auth = requireToken({ target: '127.0.0.1:1', audience: 'api', log: quietLog() });
  await auth.ready;
  const server = express().get('/me', auth, (req, res) => res.json({ reached: true })).listen(0, '127.0.0.1');
  await once(server, 'listening');
  app = { port: server.address().port, close: async () => { server.close(); await auth.close(); } };
});
after(async () => { await app?.close(); });

/** GET /me?<query> written by hand, the query exactly as the vector has it. */
async function answerTo(query) {
  const socket = connect(app.port, '127.0.0.1');
  socket.write(`GET /me?${query} HTTP/1.1\r\nHost: 127.0.0.1:${app.port}\r\nConnection: close\r\n\r\n`);
  let text = '';
  for await (const chunk of socket) text += chunk;
  const [head, body] = text.split('\r\n\r\n');
  return { status: Number(head.split(' ')[1]), ...JSON.parse(body) };
}

test('the vectors are many, and both refuse and admit', () => {
  assert.ok(cases.length >= 25);
  assert.ok(cases.some((c) => c.expected === null) && cases.some((c) => c.expected !== null));
});

for (const c of cases) {
  test(`query ${JSON.stringify(c.query)}: ${c.name}`, async () => {
    assert.deepEqual(queryNames(c.query), c.names, 'the names as parse_qsl reads them');
    const read = readRequest([], c.query);
    const problem = { problem: 'TOKEN_IN_QUERY', scheme: 'Bearer' };
    assert.deepEqual(read, c.expected === null ? { presented: undefined } : problem);
    assert.deepEqual(await answerTo(c.query), c.expected ?? NO_TOKEN);
  });
}
