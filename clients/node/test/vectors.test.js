// The shared conformance corpus (tests/vectors/tokens.json, generated from the Python
// attack catalogue): the Node verifier reaches every outcome the authority and the Python
// verifier reach, and ships the same table of texts.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { InvalidToken, KeySet, MISSING_TEXT, REASON_TEXTS, TokenVerifier, reasonText } from '../src/index.js';

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
