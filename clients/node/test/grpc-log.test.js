// grpc-js logs a metadata entry it refuses, value and all, before any interceptor runs:
// a caller's token with one character metadata may not carry reaches the log. A real
// grpc-js server behind the interceptor, a raw HTTP/2 caller, and redactedGrpcLogger.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
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

/** The lines grpc-js traced for one call, in a child process with tracing on. */
function tracedCall(mode) {
  const script = new URL('./support/traced-call.js', import.meta.url).pathname;
  const env = { ...process.env, GRPC_TRACE: 'server_call', GRPC_VERBOSITY: 'DEBUG' };
  const run = spawnSync(process.execPath, [script, mode], { env, encoding: 'utf8', timeout: 30_000 });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout);
}

test("with grpc-js's call tracing on, a request's metadata is traced by name, never by value", () => {
  const secrets = ['TOKEN-THAT-MUST-NOT-BE-LOGGED', 'PROOF-THAT-MUST-NOT-BE-LOGGED'];
  // As grpc-js is: the values reach the log (the test's own check that it could fail).
  const plain = tracedCall('plain');
  assert.ok(secrets.every((secret) => plain.some((line) => line.includes(secret))), 'grpc-js no longer traces metadata');

  const redacted = tracedCall('redacted');
  const traced = redacted.filter((line) => line.includes('received headers'));
  assert.equal(traced.length, 1, redacted.join('\n'));
  assert.match(traced[0], /Request to \/demo\.Greeter\/Greet received headers \{.*"authorization":"\(not shown\)"/);
  assert.match(traced[0], /"dpop":"\(not shown\)"/);
  assert.ok(!redacted.some((line) => secrets.some((secret) => line.includes(secret)) || line.includes('Bearer')));
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
