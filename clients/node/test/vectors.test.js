// The shared conformance corpus (tests/vectors/tokens.json, generated from the Python
// attack catalogue): the Node verifier reaches every outcome the authority and the Python
// verifier reach, and ships the same table of texts; its proof checker fails the corpus's
// DPoP proofs at the same check, and normalises its URIs to the same forms.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  CAUSE_TEXTS, DEFAULT_REPLAY_CACHE_SIZE, InvalidProof, InvalidReason, InvalidToken, KeySet, MISSING_TEXT, ProofChecker,
  REASON_TEXTS, REPLACED_BY_DEVICE_TEXT, REQUEST_TEXTS, RequestProblem, RevocationCause, TokenVerifier, describe, normalizeUri,
  problemText, reasonText, refusalText, signedOutText,
} from '../src/index.js';

const corpus = JSON.parse(readFileSync(new URL('../../../tests/vectors/tokens.json', import.meta.url), 'utf8'));
const tokenOf = (c) => (typeof c.token === 'string' ? c.token : c.token.map(([text, count]) => text.repeat(count)).join(''));

test('the Node verifier reaches every outcome of the corpus', async () => {
  const verifiers = {};
  for (const [algorithm, jwks] of Object.entries(corpus.jwks)) {
    verifiers[algorithm] = new TokenVerifier(await KeySet.fromJwks(jwks), {
      issuer: corpus.issuer, leeway: corpus.leeway, clock: () => corpus.now,
    });
  }
  const outcomes = {};
  const expected = {};
  for (const c of corpus.cases) {
    expected[c.name] = c.expected;
    try {
      verifiers[c.algorithm].verify(tokenOf(c), c.audience);
      outcomes[c.name] = 'VALID';
    } catch (error) {
      if (!(error instanceof InvalidToken)) throw error;
      outcomes[c.name] = error.reason;
    }
  }
  assert.deepEqual(outcomes, expected);
  assert.ok(corpus.cases.length > 400);
});

test('the texts are the one table the corpus carries', () => {
  assert.deepEqual({ ...REASON_TEXTS }, corpus.reasons);
  assert.equal(MISSING_TEXT, corpus.missing_text);
  for (const c of corpus.cases) {
    if (c.expected !== 'VALID') assert.equal(reasonText(c.expected), c.text, c.name);
  }
});

test('the texts of a request refused before its token is checked are those of the one table', () => {
  assert.deepEqual({ ...REQUEST_TEXTS }, corpus.request_problems);
  assert.deepEqual(Object.keys(RequestProblem).sort(), Object.keys(corpus.request_problems).sort());
  for (const [problem, text] of Object.entries(corpus.request_problems)) {
    assert.equal(RequestProblem[problem], problem);
    // What the Express middleware puts in error_description for a 400 invalid_request.
    assert.equal(problemText(problem), text);
  }
  assert.throws(() => problemText('MISSING'), TypeError);
});

test('the cause texts and how they compose are those of the one table', () => {
  assert.deepEqual({ ...CAUSE_TEXTS }, corpus.causes);
  assert.equal(REPLACED_BY_DEVICE_TEXT, corpus.replaced_by_device_text);
  assert.deepEqual(Object.keys(RevocationCause).filter((c) => c !== 'UNSPECIFIED').sort(), Object.keys(corpus.causes).sort());
  assert.ok(corpus.refusals.length > Object.keys(RevocationCause).length);
  for (const r of corpus.refusals) {
    const cause = r.cause ?? undefined;
    assert.equal(refusalText(r.reason, cause, r.device_name), r.text, JSON.stringify(r));
    // What the Express middleware and the grpc-js interceptor put in error_description.
    if (r.cause !== 'UNSPECIFIED') assert.equal(describe(r.reason, cause, r.device_name), r.text, JSON.stringify(r));
  }
  for (const shown of corpus.signed_out) {
    assert.equal(signedOutText(shown.cause ?? undefined, shown.device_name), shown.text, JSON.stringify(shown));
  }
});

test('the Node verifier and proof checker reach every outcome and check of the corpus\'s proof cases', async () => {
  const keys = {};
  for (const [algorithm, jwks] of Object.entries(corpus.jwks)) keys[algorithm] = await KeySet.fromJwks(jwks);
  const clock = () => corpus.now;
  const outcomes = {};
  const expected = {};
  for (const c of corpus.proof_cases) {
    // One fresh verifier per case: a replay meets the memory of the presentations before it.
    const proofs = new ProofChecker({ maxAge: corpus.proof_max_age, replayCacheSize: c.replay_cache_size ?? DEFAULT_REPLAY_CACHE_SIZE, clock });
    const verifier = new TokenVerifier(keys[c.algorithm], { issuer: corpus.issuer, leeway: corpus.leeway, clock, proofs });
    c.presentations.forEach((shown, i) => {
      const name = `${c.name} #${i}`;
      expected[name] = [shown.expected, shown.check];
      const proof = shown.proof === null ? undefined : { proof: shown.proof, httpMethod: shown.http_method, httpUri: shown.http_uri };
      try {
        verifier.verify(c.token, c.audience, proof);
        outcomes[name] = ['VALID', null];
      } catch (error) {
        if (!(error instanceof InvalidToken)) throw error;
        outcomes[name] = [error.reason, error instanceof InvalidProof ? error.check : null];
        // Never the proof or the token in what is thrown.
        assert.ok(!error.message.includes(c.token) && (!shown.proof || !error.message.includes(shown.proof)), name);
      }
      if (shown.expected !== 'VALID') assert.equal(reasonText(shown.expected), shown.text, name);
    });
  }
  assert.deepEqual(outcomes, expected);
  assert.ok(corpus.proof_cases.length >= 90);
  // Every check the corpus names is reached, and both proof reasons.
  const reached = new Set(Object.values(outcomes).map(([reason, check]) => check ?? reason));
  for (const name of ['size', 'form', 'typ', 'alg', 'jwk', 'signature', 'jti', 'htm', 'htu', 'iat', 'ath', 'key', 'replayed',
    'replay-cache-full', 'unbound', InvalidReason.PROOF_REQUIRED, 'VALID']) {
    assert.ok(reached.has(name), name);
  }
});

test('URIs normalise to the corpus\'s forms, as both sides of htu are compared', () => {
  assert.ok(corpus.uris.length > 20);
  for (const { uri, normalized } of corpus.uris) {
    let got;
    try {
      got = normalizeUri(uri);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
      got = null;
    }
    assert.equal(got, normalized, uri);
    if (got !== null) assert.equal(normalizeUri(got), got, `normalising is idempotent: ${uri}`);
  }
});
