// A key set older than the one taken is ignored: a stream resumed on a replica that has
// not yet reread its keys (and that replica's answer to a refetch) neither brings a
// retired key back nor withdraws a newly published one. Versions count within one log
// epoch; sets of version 0 (an authority older than versions) are taken as before. Real
// Ed25519 keys; the decisions of local mode are driven directly, with the events the
// stream and the answers a fetch would deliver; the last test reads the versions of a
// real `authority serve`.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import { SignJWT, exportJWK, generateKeyPair } from 'jose';

import { AuthorityClient, InvalidToken, LocalVerification, Validator } from '../src/index.js';
import { ASK_AUTHORITY, REFETCH_KEYS } from '../src/validation.js';
import { Authority, missingAuthority, quietLog } from './support/authority.js';

const ISSUER = 'token-authority';

async function signingKey() {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  const kid = randomBytes(6).toString('hex');
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'EdDSA', use: 'sig' };
  const sign = () => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({
      iss: ISSUER, sub: 'alice', aud: 'api', iat: now, nbf: now, exp: now + 300,
      jti: randomBytes(8).toString('hex'), sid: randomBytes(8).toString('hex'), device_id: 'laptop',
    }).setProtectedHeader({ alg: 'EdDSA', kid, typ: 'at+jwt' }).sign(privateKey);
  };
  return { kid, jwk, sign };
}

const jwks = (...keys) => JSON.stringify({ keys: keys.map((key) => key.jwk) });

async function fresh(...keys) {
  const local = new LocalVerification({ issuer: ISSUER, maxStalenessMs: 60_000, keyRefetchIntervalMs: 0, log: quietLog() });
  assert.ok(await local.keys.replace(jwks(...keys))); // no version: an authority older than versions
  local.mirror.streamStarted();
  local.mirror.apply({ kind: 'CAUGHT_UP', sequence: 1n });
  return local;
}

/** A SIGNING_KEYS event of the stream, through the mirror, once the set is taken (or not). */
async function announce(local, keys, { version, epoch = 'e1' }) {
  local.mirror.apply({ kind: 'SIGNING_KEYS', sequence: 0n, jwksJson: jwks(...keys), keySetVersion: version, epoch });
  await local.keys.queue; // the listener does not wait for the set to be taken
}

const kids = (local) => new Set(local.keys.verifier.keys.kids);

const reasonOf = (fn) => {
  try {
    const outcome = fn();
    return outcome === REFETCH_KEYS || outcome === ASK_AUTHORITY ? outcome : 'VALID';
  } catch (error) {
    if (!(error instanceof InvalidToken)) throw error;
    return error.reason;
  }
};

test('a stream resumed on a lagging replica does not bring back a retired key', async () => {
  const retired = await signingKey();
  const kept = await signingKey();
  const local = await fresh(kept);
  await announce(local, [retired, kept], { version: 5 });
  await announce(local, [kept], { version: 6 }); // retired (a compromise)
  // The stream is resumed on a replica that has not reread its keys since.
  await announce(local, [retired, kept], { version: 5 });

  assert.deepEqual(kids(local), new Set([kept.kid]));
  const token = await retired.sign();
  assert.equal(reasonOf(() => local.decide(token, 'api')), REFETCH_KEYS);
  // That replica answers the refetch with the same old set: a lower version, ignored too.
  assert.equal(await local.keys.replaceFetched({ jwksJson: jwks(retired, kept), version: 5 }), false);
  assert.equal(reasonOf(() => local.afterRefetch(token, 'api')), 'UNKNOWN_KEY');
  // Once it has reread them, its announcements are taken again.
  const newer = await signingKey();
  await announce(local, [kept, newer], { version: 7 });
  assert.deepEqual(kids(local), new Set([kept.kid, newer.kid]));
});

test('a stream resumed on a lagging replica does not withdraw a new key', async () => {
  const old = await signingKey();
  const rotated = await signingKey();
  const local = await fresh(old);
  await announce(local, [old, rotated], { version: 8 }); // a rotation published ahead
  await announce(local, [old], { version: 7 }); // a replica that has not seen it yet

  assert.deepEqual(kids(local), new Set([old.kid, rotated.kid]));
  const token = await rotated.sign();
  assert.equal(reasonOf(() => local.decide(token, 'api')), 'VALID');
});

test('a fetched set newer than the stream sets the count', async () => {
  const retired = await signingKey();
  const kept = await signingKey();
  const local = await fresh(kept);
  // The start's fetch, from a replica that has seen the retirement (no epoch: not a stream).
  assert.ok(await local.keys.replaceFetched({ jwksJson: jwks(kept), version: 4 }));
  await announce(local, [retired, kept], { version: 3 }); // the stream's replica has not

  assert.deepEqual(kids(local), new Set([kept.kid]));
  const token = await retired.sign();
  assert.equal(reasonOf(() => local.decide(token, 'api')), REFETCH_KEYS);
});

test('a stream of another epoch starts the count afresh', async () => {
  const a = await signingKey();
  const b = await signingKey();
  const local = await fresh(a);
  await announce(local, [a], { version: 9, epoch: 'e1' });
  // A restored database (or another timeline): its count is lower, and it is believed.
  await announce(local, [a, b], { version: 2, epoch: 'e2' });
  assert.deepEqual(kids(local), new Set([a.kid, b.kid]));
  // Within the new epoch, lower versions are older again.
  await announce(local, [a], { version: 1, epoch: 'e2' });
  assert.equal(await local.keys.replaceFetched({ jwksJson: jwks(a), version: 1 }), false);
  assert.deepEqual(kids(local), new Set([a.kid, b.kid]));
});

test('sets without a version are taken as before, and leave the count as it was', async () => {
  const a = await signingKey();
  const b = await signingKey();
  const local = await fresh(a);
  await announce(local, [a, b], { version: 5 });
  await announce(local, [b], { version: 0 }); // an authority older than versions
  assert.deepEqual(kids(local), new Set([b.kid]));
  // The count is still 5: a set of version 4 is older.
  await announce(local, [a, b], { version: 4 });
  assert.deepEqual(kids(local), new Set([b.kid]));
});

const skip = missingAuthority();
let authority;
let client;

before(async () => {
  if (skip) return;
  authority = await new Authority().start();
  client = new AuthorityClient(authority.target, { timeoutMs: 1000 });
});
after(async () => {
  client?.close();
  await authority?.close();
});

test('GetSigningKeys and the stream\'s SIGNING_KEYS event carry the same set version', { skip }, async () => {
  const keySet = await client.getSigningKeySet();
  assert.ok(Number.isSafeInteger(keySet.version) && keySet.version >= 1, `version ${keySet.version}`);
  assert.equal(keySet.jwksJson, await client.getSigningKeys());

  const stream = client.watchRevocations(0n);
  let announced;
  for await (const event of stream) {
    if (event.kind === 'SIGNING_KEYS') {
      announced = event;
      break;
    }
  }
  assert.equal(announced.keySetVersion, keySet.version);
  assert.equal(announced.jwksJson, keySet.jwksJson);

  // A local validator counts the version its start fetched.
  const validator = await new Validator({ client, mode: 'local', log: quietLog() }).start();
  try {
    assert.equal(validator.local.keys.version, keySet.version);
  } finally {
    await validator.close();
  }
});
