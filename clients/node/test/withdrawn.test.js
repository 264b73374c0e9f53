// A key the revocation stream withdrew (retired after a compromise, or purged) is not
// brought back by a GetSigningKeys answer from a replica that has not seen the withdrawal:
// the token naming that key is what makes the consumer refetch. Real Ed25519 keys and
// signatures; the decisions of local mode are driven directly, with the sets the stream
// and a fetch would deliver.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';

import { SignJWT, exportJWK, generateKeyPair } from 'jose';

import { InvalidToken, LocalVerification } from '../src/index.js';
import { ASK_AUTHORITY, REFETCH_KEYS } from '../src/validation.js';

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
  const local = new LocalVerification({ issuer: ISSUER, maxStalenessMs: 60_000, keyRefetchIntervalMs: 0, log: { warn() {}, info() {} } });
  assert.ok(await local.keys.replace(jwks(...keys), { fetched: true })); // the start's fetch
  local.mirror.streamStarted();
  local.mirror.apply({ kind: 'CAUGHT_UP', sequence: 1n });
  return local;
}

const reasonOf = (fn) => {
  try {
    const outcome = fn();
    return outcome === REFETCH_KEYS || outcome === ASK_AUTHORITY ? outcome : 'VALID';
  } catch (error) {
    if (!(error instanceof InvalidToken)) throw error;
    return error.reason;
  }
};

test("a key the stream withdrew is not reinstated by a fetch from a lagging replica; the stream's word is", async () => {
  const withdrawn = await signingKey();
  const kept = await signingKey();
  const local = await fresh(withdrawn, kept);
  const token = await withdrawn.sign();
  assert.equal(reasonOf(() => local.decide(token, 'api')), 'VALID');
  // Retired: the stream's set leaves it out.
  assert.ok(await local.keys.replace(jwks(kept)));

  // Its kid is unknown now: a refetch, answered with the old set by a lagging replica.
  assert.equal(reasonOf(() => local.decide(token, 'api')), REFETCH_KEYS);
  assert.ok(await local.keys.replace(jwks(withdrawn, kept), { fetched: true }));
  assert.equal(reasonOf(() => local.afterRefetch(token, 'api')), 'UNKNOWN_KEY');
  assert.deepEqual(local.keys.verifier.keys.kids, [kept.kid]);
  const keptToken = await kept.sign();
  assert.equal(reasonOf(() => local.decide(keptToken, 'api')), 'VALID'); // the rest of the fetched set is used
  // A later stream set that names it again (a database restored from before) is believed.
  assert.ok(await local.keys.replace(jwks(withdrawn, kept)));
  assert.equal(reasonOf(() => local.decide(token, 'api')), 'VALID');
});

test('a fetched set adds keys the stream has not announced yet', async () => {
  const old = await signingKey();
  const rotated = await signingKey();
  const local = await fresh(old);
  const token = await rotated.sign();
  assert.equal(reasonOf(() => local.decide(token, 'api')), REFETCH_KEYS);
  assert.ok(await local.keys.replace(jwks(old, rotated), { fetched: true }));
  assert.equal(reasonOf(() => local.afterRefetch(token, 'api')), 'VALID');
});
