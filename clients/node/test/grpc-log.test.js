// grpc-js logs a metadata entry it refuses, value and all, before any interceptor runs:
// a caller's token with one character metadata may not carry reaches the log. A real
// grpc-js server behind the interceptor, a raw HTTP/2 caller, and redactedGrpcLogger.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { AuthorityClient, authInterceptor, redactedGrpcLine, redactedGrpcLogger } from '../src/index.js';
import { Authority, missingAuthority, quietLog } from './support/authority.js';

const skip = missingAuthority();
let authority;
let client;
let server;
let interceptor;
let port;

const json = { serialize: (value) => Buffer.from(JSON.stringify(value)), deserialize: (bytes) => JSON.parse(bytes.toString()) };
const GREET = { path: '/demo.Greeter/Greet', requestStream: false, responseStream: false,
  requestSerialize: json.serialize, requestDeserialize: json.deserialize,
  responseSerialize: json.serialize, responseDeserialize: json.deserialize };

before(async () => {
  if (skip) return;
  authority = await new Authority().start();
  client = new AuthorityClient(authority.target);
  interceptor = authInterceptor({ target: authority.target, audience: 'api', log: quietLog() });
  await interceptor.ready;
  server = new grpc.Server({ interceptors: [interceptor] });
  server.addService({ Greet: GREET }, { Greet: (call, callback) => callback(null, { hello: 'world' }) });
  port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
    (error, bound) => (error ? reject(error) : resolve(bound))));
});
after(async () => {
  grpc.setLogger(console);
  server?.forceShutdown();
  await interceptor?.close();
  client?.close();
  await authority?.close();
});

/** One Greet call over raw HTTP/2 (grpc-js's client refuses such a value itself): its status and reason. */
function rawCall(authorization) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const body = Buffer.from('{}');
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    const request = session.request({
      ':method': 'POST', ':path': GREET.path, 'content-type': 'application/grpc', te: 'trailers', authorization,
    });
    const answer = {};
    const read = (headers) => {
      if (headers['grpc-status'] !== undefined) Object.assign(answer, { status: Number(headers['grpc-status']), reason: headers['x-token-invalid-reason'] });
    };
    request.on('response', read);
    request.on('trailers', read);
    request.on('error', reject);
    request.on('close', () => { session.close(); resolve(answer); });
    request.setTimeout(5000, () => request.close(http2.constants.NGHTTP2_CANCEL));
    request.end(frame);
  });
}

function collector() {
  const lines = [];
  const keep = (message, ...rest) => lines.push([message, ...rest].join(' '));
  return { lines, logger: { error: keep, info: keep, debug: keep } };
}

test('a refused metadata entry is logged by name, never by value', { skip }, async () => {
  const { accessToken } = await client.issueToken('grace', 'laptop', { audience: 'api' });
  // The end of its signature: in no line but one that holds the token.
  const secret = accessToken.slice(-40);

  // As grpc-js is: the token reaches the log (the test's own check that it could fail).
  const plain = collector();
  grpc.setLogger(plain.logger);
  assert.deepEqual(await rawCall(`Bearer ${accessToken}é`), { status: grpc.status.UNAUTHENTICATED, reason: 'MISSING' });
  assert.ok(plain.lines.some((line) => line.includes(secret)), 'grpc-js no longer logs the value: this test checks nothing');

  const redacted = collector();
  grpc.setLogger(redactedGrpcLogger(redacted.logger));
  assert.deepEqual(await rawCall(`Bearer ${accessToken}é`), { status: grpc.status.UNAUTHENTICATED, reason: 'MISSING' });
  assert.deepEqual(redacted.lines.filter((line) => line.includes('metadata entry')),
    ['Failed to add metadata entry authorization: its value is not valid metadata (not shown)']);
  assert.ok(!redacted.lines.some((line) => line.includes(secret) || line.includes('Bearer')));
});

test('other lines pass as they are, to the level grpc-js chose', () => {
  const seen = [];
  const logger = redactedGrpcLogger({ error: (m) => seen.push(['error', m]), info: (m) => seen.push(['info', m]) });
  logger.info('Server bound');
  logger.debug('a trace');
  logger.error(`Failed to add metadata entry ${'x'.repeat(100)}: secret. Metadata string value "secret" contains illegal characters`);
  assert.deepEqual(seen, [
    ['info', 'Server bound'],
    ['error', 'a trace'],
    ['error', `Failed to add metadata entry ${'x'.repeat(64)}: its value is not valid metadata (not shown)`],
  ]);
  assert.equal(redactedGrpcLine(42), 42);
});
