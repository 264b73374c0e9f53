// The shared conformance corpus (tests/vectors/tokens.json, generated from the Python
// attack catalogue): the Node verifier reaches every outcome the authority and the Python
// verifier reach, and ships the same table of texts.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  CAUSE_TEXTS, InvalidToken, KeySet, MISSING_TEXT, REASON_TEXTS, REPLACED_BY_DEVICE_TEXT, RevocationCause,
  TokenVerifier, describe, reasonText, refusalText, signedOutText,
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
