// The Node local verifier's rate, cold (every token new) and warm (the same token), against
// bare jose.jwtVerify on the same tokens. Run by the repository's scripts/bench (bench/node.py):
//   node bench/verify.js input.json  ->  one JSON line of {name: {calls, seconds, per_second}}
// input.json: {jwks, issuer, audience, leeway, warm_token, tokens: [...], warm_calls}
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

import { createLocalJWKSet, jwtVerify } from 'jose';

import { KeySet, LocalVerification } from '../src/index.js';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { issuer, audience, leeway } = input;

function rate(calls, seconds) {
  return { calls, seconds, per_second: calls / seconds };
}

async function timed(items, check) {
  const started = performance.now();
  for (const item of items) await check(item);
  return rate(items.length, (performance.now() - started) / 1000);
}

function timedSync(items, check) {
  const started = performance.now();
  for (const item of items) check(item);
  return rate(items.length, (performance.now() - started) / 1000);
}

// A local verification with a fresh mirror, as a consumer that has caught up holds it.
async function localVerification(cacheSize) {
  const local = new LocalVerification({ issuer, leewaySeconds: leeway, localCacheSize: cacheSize, log: {} });
  await local.keys.replace(input.jwks);
  local.mirror.apply({ kind: 'CAUGHT_UP', sequence: 0n });
  local.mirror.maxStalenessMs = Number.MAX_SAFE_INTEGER;
  return local;
}

const jwks = createLocalJWKSet(JSON.parse(input.jwks));
const joseOptions = { issuer, audience, typ: 'at+jwt', clockTolerance: leeway };
const cold = await localVerification(input.tokens.length + 1);
const warm = await localVerification(10_000);
const verifier = cold.keys.verifier;
await KeySet.fromJwks(input.jwks); // the same parse the consumer does, outside the timing

// Warm-up, so the JIT has compiled both paths before either is timed.
const sample = input.tokens.slice(0, Math.min(200, input.tokens.length));
for (const token of sample) { verifier.verify(token, audience); await jwtVerify(token, jwks, joseOptions); }

const warmTokens = new Array(input.warm_calls).fill(input.warm_token);
const results = {
  'jose.jwtVerify, cold (every token new)': await timed(input.tokens, (t) => jwtVerify(t, jwks, joseOptions)),
  'TokenVerifier.verify, cold (every token new)': timedSync(input.tokens, (t) => verifier.verify(t, audience)),
  'local verifier, cold (every token new)': timedSync(input.tokens, (t) => cold.decide(t, audience)),
  'jose.jwtVerify, warm (same token)': await timed(warmTokens.slice(0, Math.max(1, input.warm_calls / 20)), (t) => jwtVerify(t, jwks, joseOptions)),
  'local verifier, warm (same token)': timedSync(warmTokens, (t) => warm.decide(t, audience)),
};
for (const [name, outcome] of Object.entries(results)) {
  if (!(outcome.per_second > 0)) throw new Error(`${name}: nothing measured`);
}
process.stdout.write(`${JSON.stringify(results)}\n`);
