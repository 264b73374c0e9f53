// The proof checker (src/proof.js) with real proofs signed by jose, every bad input of the
// device-bound tokens' design (a malformed proof, a wrong typ, alg none or HS256, a jwk
// with private members, a wrong htm or htu, a stale or future iat, a replayed jti, an ath
// mismatch, another key, a proof over 8 KiB), the replay cache's bounds, URI
// normalisation, and the token verifier's binding (no downgrade) with tokens signed by the
// shared corpus's test keys.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { SignJWT } from 'jose';

import {
  DEFAULT_REPLAY_CACHE_SIZE, InvalidProof, InvalidToken, KeySet, LocalVerification, MAX_PROOF_BYTES, ProofChecker, TokenVerifier,
  accessTokenHash, grpcProofUri, jwkThumbprint, normalizeUri,
} from '../src/index.js';
import { Device, ath, corpus, corpusToken, unsigned } from './support/dpop.js';

const URI = 'https://api.example.com/orders';
const now = () => Math.floor(Date.now() / 1000);

/** The check a proof fails ('OK' with the thumbprint when it passes). */
function outcome(checker, proof, options) {
  try {
    return ['OK', checker.check(proof, options)];
  } catch (error) {
    if (!(error instanceof InvalidProof)) throw error;
    assert.equal(error.reason, 'BAD_PROOF');
    assert.ok(error instanceof InvalidToken);
    return [error.check];
  }
}
const checkOf = (checker, proof, options) => outcome(checker, proof, options)[0];

describe('a good proof', () => {
  for (const algorithm of ['EdDSA', 'ES256', 'RS256']) {
    test(`${algorithm}: accepted once, with its key's RFC 7638 thumbprint; the same proof again is replayed`, async () => {
      const device = await Device.generate(algorithm);
      const checker = new ProofChecker();
      const token = 'a.b.c';
      const proof = await device.proofFor('GET', URI, { accessToken: token });
      assert.deepEqual(outcome(checker, proof, { accessToken: token, keyThumbprint: device.thumbprint }), ['OK', device.thumbprint]);
      assert.equal(jwkThumbprint(device.jwk), device.thumbprint);
      assert.equal(checker.replayCacheEntries, 1);
      assert.equal(checkOf(checker, proof, { accessToken: token }), 'replayed');
      assert.equal(checker.replayCacheEntries, 1);
    });
  }

  test('the htu is compared normalised: case, default port, dot segments, query and fragment', async () => {
    const device = await Device.generate();
    const checker = new ProofChecker();
    const proof = await device.proofFor('POST', 'https://api.example.com/orders/7', { htu: 'HTTPS://API.Example.COM:443/a/../orders/./7?x=1#f' });
    assert.equal(checkOf(checker, proof), 'OK');
  });

  test('an ES256 proof with a high S (WebCrypto does not normalise it) is accepted, and its low-S twin is a replay', async () => {
    const device = await Device.generate('ES256');
    const checker = new ProofChecker();
    const text = await device.proof('GET', URI);
    const [head, body, signature] = text.split('.');
    const bytes = Buffer.from(signature, 'base64url');
    const order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551n;
    const s = BigInt('0x' + bytes.toString('hex', 32));
    const flipped = Buffer.concat([bytes.subarray(0, 32), Buffer.from((order - s).toString(16).padStart(64, '0'), 'hex')]);
    const twin = `${head}.${body}.${flipped.toString('base64url')}`;
    assert.equal(checkOf(checker, { proof: twin, httpMethod: 'GET', httpUri: URI }), 'OK');
    assert.equal(checkOf(checker, { proof: text, httpMethod: 'GET', httpUri: URI }), 'replayed');
  });

  test('without an access token ath is not checked (sign-in, refresh)', async () => {
    const device = await Device.generate();
    assert.equal(checkOf(new ProofChecker(), await device.proofFor('POST', URI, { claims: { ath: 'anything' } })), 'OK');
  });
});

describe('bad proofs: each fails its own check, with BAD_PROOF, and is not recorded', () => {
  let device;
  let other;
  const base = { jti: 'j-1', htm: 'GET', htu: URI };
  const cases = [
    ['a proof over 8 KiB', 'size', async () => ({ proof: 'a'.repeat(MAX_PROOF_BYTES + 1) })],
    ['a proof that is not a string', 'size', async () => ({ proof: 42 })],
    ['a malformed proof (not three segments)', 'form', async () => ({ proof: 'not-a-proof' })],
    ['a malformed proof (padded base64url)', 'form', async () => ({ proof: (await device.proof('GET', URI)).replace(/\.([^.]*)$/, '.$1==') })],
    ['a malformed proof (the header is not JSON)', 'form', async () => ({ proof: `bm90LWpzb24.${Buffer.from('{}').toString('base64url')}.c2ln` })],
    ['a malformed proof (duplicate names)', 'form', async () => ({ proof: `${Buffer.from('{"typ":"dpop+jwt","typ":"dpop+jwt"}').toString('base64url')}.e30.c2ln` })],
    ['a crit header', 'form', async () => ({ proof: unsigned({ typ: 'dpop+jwt', alg: 'EdDSA', jwk: device.jwk, crit: ['exp'] }, { ...base, iat: now() }) })],
    ['a wrong typ', 'typ', async () => ({ proof: await device.proof('GET', URI, { header: { typ: 'JWT' } }) })],
    ['no typ', 'typ', async () => ({ proof: await device.proof('GET', URI, { header: { typ: undefined } }) })],
    ['alg none', 'alg', async () => ({ proof: unsigned({ typ: 'dpop+jwt', alg: 'none', jwk: device.jwk }, { ...base, iat: now() }) })],
    ['alg HS256', 'alg', async () => ({
      proof: await new SignJWT({ ...base, iat: now() }).setProtectedHeader({ typ: 'dpop+jwt', alg: 'HS256', jwk: device.jwk }).sign(Buffer.alloc(32, 7)),
    })],
    ['a jwk with the private member d', 'jwk', async () => ({ proof: await device.proof('GET', URI, { header: { jwk: { ...device.jwk, d: 'AAAA' } } }) })],
    ['a symmetric jwk (k)', 'jwk', async () => ({ proof: await device.proof('GET', URI, { header: { jwk: { kty: 'oct', k: 'AAAA' } } }) })],
    ['no jwk', 'jwk', async () => ({ proof: await device.proof('GET', URI, { header: { jwk: undefined } }) })],
    ['a jwk of another curve than the alg needs', 'jwk', async () => ({ proof: await device.proof('GET', URI, { header: { jwk: { ...device.jwk, crv: 'Ed448' } } }) })],
    ['a jwk not in its canonical spelling', 'jwk', async () => ({ proof: await device.proof('GET', URI, { header: { jwk: { ...device.jwk, x: `${device.jwk.x}A` } } }) })],
    ['an RSA jwk over 8192 bits', 'jwk', async () => ({ proof: unsigned({ typ: 'dpop+jwt', alg: 'RS256', jwk: { kty: 'RSA', n: Buffer.alloc(1025, 0xff).toString('base64url'), e: 'AQAB' } }, { ...base, iat: now() }) })],
    ['an RSA jwk under 2048 bits', 'jwk', async () => ({ proof: unsigned({ typ: 'dpop+jwt', alg: 'RS256', jwk: { kty: 'RSA', n: Buffer.alloc(255, 0xff).toString('base64url'), e: 'AQAB' } }, { ...base, iat: now() }) })],
    ['an RSA exponent over 32 bits', 'jwk', async () => ({ proof: unsigned({ typ: 'dpop+jwt', alg: 'RS256', jwk: { kty: 'RSA', n: Buffer.alloc(256, 0xff).toString('base64url'), e: Buffer.from('0100000001', 'hex').toString('base64url') } }, { ...base, iat: now() }) })],
    ['a proof signed by another key than its jwk', 'signature', async () => ({ proof: await device.proof('GET', URI, { header: { jwk: other.jwk } }) })],
    ['no jti', 'jti', async () => ({ proof: await device.proof('GET', URI, { claims: { jti: undefined } }) })],
    ['a jti that is a number', 'jti', async () => ({ proof: await device.proof('GET', URI, { jti: 7 }) })],
    ['an empty jti', 'jti', async () => ({ proof: await device.proof('GET', URI, { jti: '' }) })],
    ['a jti over 256 characters', 'jti', async () => ({ proof: await device.proof('GET', URI, { jti: 'j'.repeat(257) }) })],
    ['a wrong htm', 'htm', async () => ({ proof: await device.proof('POST', URI) })],
    ['an htm in another case', 'htm', async () => ({ proof: await device.proof('get', URI) })],
    ['a wrong htu (another path)', 'htu', async () => ({ proof: await device.proof('GET', 'https://api.example.com/other') })],
    ['a wrong htu (another host)', 'htu', async () => ({ proof: await device.proof('GET', 'https://evil.example.com/orders') })],
    ['a wrong htu (http for https)', 'htu', async () => ({ proof: await device.proof('GET', 'http://api.example.com/orders') })],
    ['an htu that is no URI', 'htu', async () => ({ proof: await device.proof('GET', '/orders') })],
    ['a stale iat', 'iat', async () => ({ proof: await device.proof('GET', URI, { iat: now() - 61 }) })],
    ['a future iat', 'iat', async () => ({ proof: await device.proof('GET', URI, { iat: now() + 61 }) })],
    ['an iat that is a string', 'iat', async () => ({ proof: await device.proof('GET', URI, { iat: String(now()) }) })],
    ['an iat that is a boolean', 'iat', async () => ({ proof: await device.proof('GET', URI, { iat: true }) })],
    ['an ath mismatch', 'ath', async () => ({ proof: await device.proof('GET', URI, { accessToken: 'another.token.x' }) })],
    ['no ath', 'ath', async () => ({ proof: await device.proof('GET', URI) })],
    ['a proof by another key (a stolen token)', 'key', async () => ({ proof: await other.proof('GET', URI, { accessToken: 'the.token.t' }) })],
  ];
  for (const [name, check, make] of cases) {
    test(`${name}: ${check}`, async () => {
      device ??= await Device.generate();
      other ??= await Device.generate();
      const checker = new ProofChecker();
      const proof = { httpMethod: 'GET', httpUri: URI, ...(await make()) };
      // ath and key are checked for a token and a key: those cases check with both.
      const options = check === 'ath' || check === 'key'
        ? { accessToken: 'the.token.t', keyThumbprint: device.thumbprint } : {};
      let error;
      try {
        checker.check(proof, options);
      } catch (caught) {
        error = caught;
      }
      assert.ok(error instanceof InvalidProof, `expected InvalidProof, got ${error}`);
      assert.equal(error.check, check);
      assert.equal(error.reason, 'BAD_PROOF');
      // Nothing of the proof in the error; nothing recorded.
      assert.ok(typeof proof.proof !== 'string' || !String(error.message).includes(proof.proof.slice(0, 20)));
      assert.equal(checker.replayCacheEntries, 0);
    });
  }

  test('a proof refused for its request does not burn its jti: the right request still takes it', async () => {
    device ??= await Device.generate();
    const checker = new ProofChecker();
    const text = await device.proof('GET', URI);
    assert.equal(checkOf(checker, { proof: text, httpMethod: 'POST', httpUri: URI }), 'htm');
    assert.equal(checkOf(checker, { proof: text, httpMethod: 'GET', httpUri: URI }), 'OK');
  });
});

describe('the replay cache', () => {
  test('is bounded: full of pairs in their window it refuses new proofs, and takes them again once they expire', async () => {
    let clock = now();
    // One key allowed the whole cache: the global bound is what refuses here.
    const checker = new ProofChecker({ maxAge: 10, replayCacheSize: 2, perKeyLimit: 2, clock: () => clock });
    const device = await Device.generate();
    const proof = (jti, iat = clock) => device.proofFor('GET', URI, { jti, iat });
    assert.equal(checkOf(checker, await proof('a')), 'OK');
    assert.equal(checkOf(checker, await proof('b')), 'OK');
    assert.equal(checkOf(checker, await proof('c')), 'replay-cache-full');
    assert.equal(checker.replayCacheEntries, 2);
    // Past the window of a and b (iat + maxAge), both go, and a replay of a is stale anyway.
    const late = await proof('a');
    clock += 11;
    assert.equal(checkOf(checker, await proof('c')), 'OK');
    assert.equal(checker.replayCacheEntries, 1);
    assert.equal(checkOf(checker, late), 'iat');
  });

  test('a flooding key is refused at its quota while another key still passes', async () => {
    const clock = now();
    const checker = new ProofChecker({ maxAge: 10, replayCacheSize: 10, perKeyLimit: 3, clock: () => clock });
    const [flooder, other] = [await Device.generate(), await Device.generate('ES256')];
    for (const jti of ['f0', 'f1', 'f2']) {
      assert.deepEqual(outcome(checker, await flooder.proofFor('GET', URI, { jti, iat: clock })), ['OK', flooder.thumbprint]);
    }
    assert.equal(checkOf(checker, await flooder.proofFor('GET', URI, { jti: 'f3', iat: clock })), 'replay-quota');
    // The refused proof took no room, and the cache has room for everyone else.
    assert.equal(checker.replayCacheEntries, 3);
    for (const jti of ['o0', 'o1', 'o2']) {
      assert.deepEqual(outcome(checker, await other.proofFor('GET', URI, { jti, iat: clock })), ['OK', other.thumbprint]);
    }
    assert.equal(checker.replayCacheEntries, 6);
    // A replay is still a replay, not a quota refusal.
    assert.equal(checkOf(checker, await flooder.proofFor('GET', URI, { jti: 'f0', iat: clock })), 'replayed');
  });

  test('the default quota is a tenth of the cache, at least one', async () => {
    assert.equal(new ProofChecker().perKeyLimit, DEFAULT_REPLAY_CACHE_SIZE / 10);
    assert.equal(new ProofChecker({ replayCacheSize: 25 }).perKeyLimit, 2);
    assert.equal(new ProofChecker({ replayCacheSize: 9 }).perKeyLimit, 1);
    assert.equal(new ProofChecker({ replayCacheSize: 25, perKeyLimit: 25 }).perKeyLimit, 25);
    const clock = now();
    const checker = new ProofChecker({ replayCacheSize: 20, clock: () => clock });
    const [flooder, other] = [await Device.generate(), await Device.generate()];
    assert.equal(checkOf(checker, await flooder.proofFor('GET', URI, { jti: 'f0', iat: clock })), 'OK');
    assert.equal(checkOf(checker, await flooder.proofFor('GET', URI, { jti: 'f1', iat: clock })), 'OK');
    assert.equal(checkOf(checker, await flooder.proofFor('GET', URI, { jti: 'f2', iat: clock })), 'replay-quota');
    assert.equal(checkOf(checker, await other.proofFor('GET', URI, { jti: 'o0', iat: clock })), 'OK');
  });

  test('entries leaving their window free the quota', async () => {
    const start = now();
    let clock = start;
    const checker = new ProofChecker({ maxAge: 10, replayCacheSize: 10, perKeyLimit: 2, clock: () => clock });
    const device = await Device.generate();
    const proof = (jti) => device.proofFor('GET', URI, { jti, iat: clock });
    assert.equal(checkOf(checker, await proof('a')), 'OK');
    clock = start + 5;
    assert.equal(checkOf(checker, await proof('b')), 'OK');
    assert.equal(checkOf(checker, await proof('c')), 'replay-quota');
    // a leaves its window (start + 10): one place in the quota, not two.
    clock = start + 11;
    assert.equal(checkOf(checker, await proof('c')), 'OK');
    assert.equal(checkOf(checker, await proof('d')), 'replay-quota');
    assert.equal(checker.replayCacheEntries, 2);
    // Both b and c left: the whole quota is back.
    clock = start + 100;
    assert.equal(checkOf(checker, await proof('e')), 'OK');
    assert.equal(checkOf(checker, await proof('f')), 'OK');
    assert.equal(checker.replayCacheEntries, 2);
  });

  test('keys within their quotas can still fill the cache, which then refuses every key', async () => {
    let clock = now();
    const checker = new ProofChecker({ maxAge: 10, replayCacheSize: 4, perKeyLimit: 2, clock: () => clock });
    const [first, second, third] = [await Device.generate(), await Device.generate(), await Device.generate()];
    for (const device of [first, second]) {
      for (const jti of ['j0', 'j1']) assert.equal(checkOf(checker, await device.proofFor('GET', URI, { jti, iat: clock })), 'OK');
    }
    assert.equal(checkOf(checker, await third.proofFor('GET', URI, { jti: 'j0', iat: clock })), 'replay-cache-full');
    assert.equal(checkOf(checker, await first.proofFor('GET', URI, { jti: 'j0', iat: clock })), 'replayed');
    assert.equal(checker.replayCacheEntries, 4);
    clock += 11;
    assert.equal(checkOf(checker, await third.proofFor('GET', URI, { jti: 'j0', iat: clock })), 'OK');
    assert.equal(checker.replayCacheEntries, 1);
  });

  test('a jti is per key: the same jti from two devices is two proofs', async () => {
    const checker = new ProofChecker();
    const [a, b] = [await Device.generate(), await Device.generate('ES256')];
    assert.equal(checkOf(checker, await a.proofFor('GET', URI, { jti: 'same' })), 'OK');
    assert.equal(checkOf(checker, await b.proofFor('GET', URI, { jti: 'same' })), 'OK');
    assert.equal(checkOf(checker, await a.proofFor('GET', URI, { jti: 'same' })), 'replayed');
  });

  test('the window is maxAge either way, inclusive', async () => {
    const clock = now();
    const checker = new ProofChecker({ maxAge: 30, clock: () => clock });
    const device = await Device.generate();
    assert.equal(checkOf(checker, await device.proofFor('GET', URI, { iat: clock - 30 })), 'OK');
    assert.equal(checkOf(checker, await device.proofFor('GET', URI, { iat: clock + 30 })), 'OK');
    assert.equal(checkOf(checker, await device.proofFor('GET', URI, { iat: clock + 31 })), 'iat');
  });

  test('refuses settings that could never accept a proof', () => {
    assert.throws(() => new ProofChecker({ maxAge: 0 }), RangeError);
    assert.throws(() => new ProofChecker({ replayCacheSize: 0 }), RangeError);
    assert.throws(() => new ProofChecker({ perKeyLimit: 0 }), RangeError);
  });
});

test('normalizeUri follows RFC 3986 section 6 as the Python normalize_uri does', () => {
  const cases = [
    ['HTTPS://Example.COM:443/a/./b/../c?q#f', 'https://example.com/a/c'],
    ['http://example.com:80', 'http://example.com/'],
    ['http://example.com:8080/', 'http://example.com:8080/'],
    ['https://example.com:0443/x', 'https://example.com/x'],
    ['https://example.com:/x', 'https://example.com/x'],
    ['https://example.com/%7euser/%2f%41', 'https://example.com/~user/%2FA'],
    ['https://example.com/caf\u00e9', 'https://example.com/caf%C3%A9'],
    ['https://example.com/a%zz', 'https://example.com/a%25zz'],
    ['https://[::1]:8443/p', 'https://[::1]:8443/p'],
    ['https://example.com/..', 'https://example.com/'],
  ];
  for (const [uri, normal] of cases) assert.equal(normalizeUri(uri), normal, uri);
  for (const bad of ['/orders', 'ftp://example.com/', 'https://user@example.com/', 'https:///x', 'https://exa mple.com/',
    'https://example.com:99999/', 'https://example.com/\n', 'mailto:a@example.com', 42, 'https://example.com/\ud800']) {
    assert.throws(() => normalizeUri(bad), TypeError, String(bad));
  }
  assert.equal(grpcProofUri('orders.example.com', '/shop.Orders/Get'), 'https://orders.example.com/shop.Orders/Get');
  assert.throws(() => grpcProofUri('orders.example.com', 'shop.Orders/Get'), TypeError);
  assert.equal(accessTokenHash('a.b.c'), ath('a.b.c'));
});

describe('the token verifier and device-bound tokens (no downgrade)', () => {
  const verifier = async (proofs) => new TokenVerifier(await KeySet.fromJwks(corpus.jwks.EdDSA), { issuer: corpus.issuer, proofs });
  const reasonOf = (fn) => {
    try {
      fn();
      return 'VALID';
    } catch (error) {
      if (!(error instanceof InvalidToken)) throw error;
      return error instanceof InvalidProof ? `BAD_PROOF/${error.check}` : error.reason;
    }
  };

  test('a bound token: PROOF_REQUIRED without a proof, its claims with a good one, refused with a stolen one', async () => {
    const v = await verifier();
    const device = await Device.generate();
    const thief = await Device.generate('ES256');
    const token = await corpusToken({ cnf: { jkt: device.thumbprint } });
    assert.equal(reasonOf(() => v.verify(token, 'api')), 'PROOF_REQUIRED');
    assert.equal(reasonOf(() => v.verify(token, 'api', null)), 'PROOF_REQUIRED');
    const good = await device.proofFor('GET', URI, { accessToken: token });
    const claims = v.verify(token, 'api', good);
    assert.equal(claims.keyThumbprint, device.thumbprint);
    assert.ok(!Object.hasOwn(claims.extra, 'cnf'));
    assert.equal(reasonOf(() => v.verify(token, 'api', good)), 'BAD_PROOF/replayed');
    const stolen = await thief.proofFor('GET', URI, { accessToken: token });
    assert.equal(reasonOf(() => v.verify(token, 'api', stolen)), 'BAD_PROOF/key');
    const forAnother = await device.proofFor('GET', URI, { accessToken: await corpusToken({ cnf: { jkt: device.thumbprint } }) });
    assert.equal(reasonOf(() => v.verify(token, 'api', forAnother)), 'BAD_PROOF/ath');
  });

  test('token steps come before the proof: a bound token for another audience is WRONG_AUDIENCE, proof or not', async () => {
    const v = await verifier();
    const device = await Device.generate();
    const token = await corpusToken({ cnf: { jkt: device.thumbprint }, audience: 'billing' });
    assert.equal(reasonOf(() => v.verify(token, 'api')), 'WRONG_AUDIENCE');
    assert.equal(reasonOf(() => v.verify(token, 'api', { proof: 'junk', httpMethod: 'GET', httpUri: URI })), 'WRONG_AUDIENCE');
  });

  test('an unbound token with a proof is BAD_PROOF (unbound); without one it is a bearer token', async () => {
    const v = await verifier();
    const device = await Device.generate();
    const token = await corpusToken();
    assert.equal(v.verify(token, 'api').keyThumbprint, '');
    const proof = await device.proofFor('GET', URI, { accessToken: token });
    assert.equal(reasonOf(() => v.verify(token, 'api', proof)), 'BAD_PROOF/unbound');
  });

  test('cnf is accepted only as {"jkt": <43 characters of canonical base64url>}', async () => {
    const v = await verifier();
    const jkt = (await Device.generate()).thumbprint;
    const bad = [null, {}, [], 'x', { jkt: `${jkt}A` }, { jkt: jkt.slice(1) }, { jkt, x5t: 'y' }, { 'x5t#S256': jkt },
      { jkt: `${jkt.slice(0, 42)}B` }, { jkt: 7 }, { jwk: { kty: 'OKP' } }];
    for (const cnf of bad) {
      const token = await corpusToken({ cnf });
      assert.equal(reasonOf(() => v.verify(token, 'api')), 'MALFORMED', JSON.stringify(cnf));
    }
    // The good form, for contrast: bound, so it needs a proof.
    const bound = await corpusToken({ cnf: { jkt } });
    assert.equal(reasonOf(() => v.verify(bound, 'api')), 'PROOF_REQUIRED');
  });

  test('the checker is the verifier\'s own by default, on its clock, or the one it is given', async () => {
    const shared = new ProofChecker();
    const v = await verifier(shared);
    assert.equal(v.proofs, shared);
    const device = await Device.generate();
    const token = await corpusToken({ cnf: { jkt: device.thumbprint } });
    v.verify(token, 'api', await device.proofFor('GET', URI, { accessToken: token }));
    assert.equal(shared.replayCacheEntries, 1);
  });

  test('local mode: a remembered token still needs a fresh proof on every call', async () => {
    const local = new LocalVerification({ issuer: corpus.issuer, maxStalenessMs: 60_000, log: { warn() {} } });
    assert.ok(await local.keys.replace(corpus.jwks.EdDSA));
    local.mirror.streamStarted();
    local.mirror.apply({ kind: 'CAUGHT_UP', sequence: 1n });
    const device = await Device.generate();
    const token = await corpusToken({ cnf: { jkt: device.thumbprint } });
    const proof = await device.proofFor('GET', URI, { accessToken: token });
    assert.equal(local.decide(token, 'api', proof).keyThumbprint, device.thumbprint);
    assert.equal(local.cached, 1);
    const decide = (p) => reasonOf(() => local.decide(token, 'api', p));
    assert.equal(decide(proof), 'BAD_PROOF/replayed');
    assert.equal(decide(undefined), 'PROOF_REQUIRED');
    assert.equal(decide(await (await Device.generate()).proofFor('GET', URI, { accessToken: token })), 'BAD_PROOF/key');
    assert.equal(decide(await device.proofFor('GET', URI, { accessToken: token })), 'VALID');
    assert.equal(local.proofs.replayCacheEntries, 2);
  });

  for (const [name, localCacheSize, seenBefore] of [
    ['first seen, uncached', 0, false], ['remembered, uncached', 0, true],
    ['first seen, cached', 100, false], ['remembered, cached', 100, true],
  ]) {
    test(`local mode (${name}): a revoked bound token spends none of its key's proofs`, async () => {
      const local = new LocalVerification({
        issuer: corpus.issuer, maxStalenessMs: 60_000, localCacheSize, log: { warn() {} },
      });
      assert.ok(await local.keys.replace(corpus.jwks.EdDSA));
      local.mirror.streamStarted();
      local.mirror.apply({ kind: 'CAUGHT_UP', sequence: 1n });
      const device = await Device.generate();
      const token = await corpusToken({ cnf: { jkt: device.thumbprint }, sid: 's-bound' });
      const proof = () => device.proofFor('GET', URI, { accessToken: token });
      if (seenBefore) assert.equal(local.decide(token, 'api', await proof()).keyThumbprint, device.thumbprint);
      const spent = local.proofs.replayCacheEntries;
      const expiresAt = new Date(Date.now() + 300_000);
      local.mirror.apply({ kind: 'REVOCATION', sequence: 2n, sessionId: 's-bound', expiresAt });
      const once = await proof();
      const reasons = [];
      for (const sent of [once, once, await proof()]) reasons.push(reasonOf(() => local.decide(token, 'api', sent)));
      assert.deepEqual(reasons, ['REVOKED', 'REVOKED', 'REVOKED']);
      assert.equal(local.proofs.replayCacheEntries, spent);
    });
  }
});


test('fuzz: any mutation of a proof, method or URI fails only with InvalidProof, never another error', async () => {
  // A seeded generator: a failure names the iteration, and the run repeats exactly.
  let seed = 0x9e3779b9;
  const random = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  const pick = (items) => items[Math.floor(random() * items.length)];
  const device = await Device.generate('ES256');
  const token = 'the.token.t';
  const good = await device.proof('GET', URI, { accessToken: token });
  const alphabet = 'AZaz09-_.=+/ %\u0000\u00e9\ud800{}"';
  const texts = [
    () => good.slice(0, Math.floor(random() * good.length)),
    () => { const i = Math.floor(random() * good.length); return good.slice(0, i) + pick([...alphabet]) + good.slice(i + 1); },
    () => good.split('.').map((part) => (random() < 0.3 ? '' : part)).join('.'),
    () => [0, 1, 2].map(() => Buffer.from(JSON.stringify(pick([{}, [], 'x', 1, null, { typ: 'dpop+jwt', alg: pick(['EdDSA', 'ES256', 'RS256', 'none']), jwk: pick([device.jwk, {}, null, 'k', { kty: 'RSA', n: 'AQAB', e: 'AQAB' }]) }]))).toString('base64url')).join('.'),
    () => Array.from({ length: Math.floor(random() * 40) }, () => pick([...alphabet])).join(''),
  ];
  const uris = [URI, 'https://api.example.com/%zz', 'not a uri', '', 'https://[::1/', 'HTTPS://API.EXAMPLE.COM:443/orders?x#y'];
  for (let i = 0; i < 3000; i++) {
    const checker = new ProofChecker();
    const proof = { proof: pick(texts)(), httpMethod: pick(['GET', 'POST', '', 'get']), httpUri: pick(uris) };
    try {
      checker.check(proof, random() < 0.5 ? { accessToken: token, keyThumbprint: device.thumbprint } : {});
    } catch (error) {
      assert.ok(error instanceof InvalidProof, `iteration ${i}: ${error}`);
    }
  }
});
