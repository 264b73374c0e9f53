// A numeric option is checked where it is given: TypeError for one that is not a number,
// RangeError for one out of range (NaN, Infinity, negative, a fraction where a count is
// meant), each naming the option. A regression test: every one of these was taken, and
// Infinity became no deadline, a mirror that never goes stale or a timer firing at once.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  AuthorityClient, LocalVerification, ProofChecker, RevocationMirror, Validator, requireToken,
} from '../src/index.js';

const TARGET = '127.0.0.1:1'; // never dialled: grpc-js connects on the first call
const quiet = { warn() {}, error() {} };
const NOT_NUMBERS = ['5000', null, true, 5000n];
const OUT_OF_RANGE = [NaN, Infinity, -Infinity, -1];

// [what is built, the option, values it takes, more values it refuses with a RangeError]
const CASES = [
  ...['remote', 'local'].flatMap((mode) => {
    const validator = (options) => new Validator({ target: TARGET, mode, log: quiet, ...options });
    return [
      [`Validator (${mode})`, validator, 'maxStalenessMs', [1, 5000], [0]],
      [`Validator (${mode})`, validator, 'leewaySeconds', [0, 30], [3650 * 86400 + 1]],
      [`Validator (${mode})`, validator, 'keyRefetchIntervalMs', [0, 1000], []],
      [`Validator (${mode})`, validator, 'localCacheSize', [0, 10], [1.5, 1e12]],
      [`Validator (${mode})`, validator, 'proofMaxAge', [0.5, 60], [0]],
      [`Validator (${mode})`, validator, 'proofReplayCacheSize', [1, 100], [0, 2.5]],
      ...['heartbeatIntervalMs', 'minBackoffMs'].map((name) => [
        `Validator (${mode})`, (options) => validator({ follow: options }), name, [1, 1000],
        // Under 1 ms, a heartbeat interval would be sent as a zero Duration.
        name === 'heartbeatIntervalMs' ? [0, 1e-7, 0.5, 2 ** 31] : [0, 2 ** 31],
      ]),
      [`Validator (${mode})`, (options) => validator({ follow: { minBackoffMs: 50, ...options } }), 'maxBackoffMs',
        [50, 2000], [49]],
      // A stream cut for silence before each heartbeat could arrive would reopen for ever.
      [`Validator (${mode})`, (options) => validator({ follow: { heartbeatIntervalMs: 1000, ...options } }),
        'idleTimeoutMs', [1001, 3000], [0, 500, 1000, 2 ** 31]],
    ];
  }),
  ['LocalVerification', (options) => new LocalVerification({ log: quiet, ...options }), 'maxStalenessMs', [1], [0]],
  ['RevocationMirror', (options) => new RevocationMirror(options), 'maxStalenessMs', [1], [0]],
  ['RevocationMirror', (options) => new RevocationMirror(options), 'leewaySeconds', [0], []],
  ['ProofChecker', (options) => new ProofChecker(options), 'maxAge', [1], [0]],
  ['ProofChecker', (options) => new ProofChecker(options), 'replayCacheSize', [1, 25], [0, 2.5]],
  ['ProofChecker', (options) => new ProofChecker(options), 'perKeyLimit', [1], [0, 2.5]],
  ['AuthorityClient', (options) => new AuthorityClient(TARGET, options), 'timeoutMs', [1, 2000], [0]],
  ['AuthorityClient', (options) => new AuthorityClient(TARGET, options), 'maxAttempts', [2, 4], [0, 1, 2.5]],
  // 100/3 ms has more decimals than grpc-js's service config takes: written to nine.
  ['AuthorityClient', (options) => new AuthorityClient(TARGET, options), 'initialBackoffMs', [1, 100 / 3], [0, 0.5]],
  ['AuthorityClient', (options) => new AuthorityClient(TARGET, options), 'maxBackoffMs', [1, 100 / 3], [0]],
  ['requireToken', (options) => requireToken({ target: TARGET, audience: 'api', log: quiet, ...options }),
    'retryAfterSeconds', [0, 1], [1.5]],
];

/** Closes what was built, if it holds a channel. */
async function dispose(made) {
  if (typeof made?.close === 'function') await made.close();
}

for (const [what, make, name, good, bad] of CASES) {
  test(`${what}: ${name} must be a number in range`, async () => {
    for (const value of good) await dispose(make({ [name]: value }));
    const refused = (Class) => (error) => error instanceof Class && error.message.includes(name);
    for (const value of NOT_NUMBERS) {
      assert.throws(() => make({ [name]: value }), refused(TypeError), `${name}: ${value}`);
    }
    for (const value of [...OUT_OF_RANGE, ...bad]) {
      assert.throws(() => make({ [name]: value }), refused(RangeError), `${name}: ${value}`);
    }
  });
}

test("a call's own timeoutMs is checked too: Infinity would be no deadline", async () => {
  const client = new AuthorityClient(TARGET);
  try {
    for (const timeoutMs of [Infinity, NaN, 0, -5]) {
      await assert.rejects(client.getSigningKeys({ timeoutMs }), RangeError, String(timeoutMs));
    }
    await assert.rejects(client.getSigningKeys({ timeoutMs: '10' }), TypeError);
  } finally {
    client.close();
  }
});

test('requireToken: realm must be printable ASCII, as it goes into every challenge', async () => {
  const make = (realm) => requireToken({ target: TARGET, audience: 'api', log: quiet, realm });
  await dispose(make('orders api'));
  for (const realm of ['api\r\nSet-Cookie: x=1', 'caf\u00e9', 42, null]) {
    assert.throws(() => make(realm), (error) => error instanceof TypeError && error.message.includes('realm'), String(realm));
  }
});
