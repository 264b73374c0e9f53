// The Node local verifier's rate, cold (every token new) and warm (the same token), against
// bare jose.jwtVerify on the same tokens. Run by the repository's scripts/bench (bench/node.py):
//   node bench/verify.js input.json  ->  one JSON line of {name: {calls, seconds, per_second}}
// input.json: {jwks, issuer, audience, leeway, warm_token, tokens: [...], warm_calls}
// Also the proof checker's rate on DPoP proofs (EdDSA and ES256, every proof new), made
// here with jose as a device makes them: what a bound token costs on top of its own checks.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

import { SignJWT, calculateJwkThumbprint, createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify } from 'jose';

import { KeySet, LocalVerification, ProofChecker, accessTokenHash } from '../src/index.js';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { issuer, audience, leeway } = input;

// Wall time and this process's CPU time (every thread: jose verifies on libuv's worker
// threads, this package on the main thread). On a shared machine the CPU rate is the one
// to compare: a synchronous loop and one awaiting a worker are scheduled differently.
function rate(calls, seconds, cpuSeconds) {
  return { calls, seconds, per_second: calls / seconds, cpu_seconds: cpuSeconds, per_cpu_second: calls / cpuSeconds };
}

async function timed(items, check) {
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (const item of items) await check(item);
  const used = process.cpuUsage(cpu);
  return rate(items.length, (performance.now() - started) / 1000, (used.user + used.system) / 1e6);
}

function timedSync(items, check) {
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (const item of items) check(item);
  const used = process.cpuUsage(cpu);
  return rate(items.length, (performance.now() - started) / 1000, (used.user + used.system) / 1e6);
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
const warm = await localVerification(10_000);
const verifier = warm.keys.verifier;
await KeySet.fromJwks(input.jwks); // the same parse the consumer does, outside the timing

// Warm-up, so the JIT has compiled both paths before either is timed.
const sample = input.tokens.slice(0, Math.min(200, input.tokens.length));
for (const token of sample) { verifier.verify(token, audience); await jwtVerify(token, jwks, joseOptions); }

// Proofs for one request, each new (a proof is good once), with the ath of one token.
const PROOF_URI = 'https://api.example.com/orders';
async function proofs(algorithm, count) {
  const { publicKey, privateKey } = await generateKeyPair(algorithm);
  const jwk = await exportJWK(publicKey);
  const ath = accessTokenHash(input.warm_token);
  const made = [];
  for (let i = 0; i < count; i++) {
    const claims = { jti: randomBytes(12).toString('base64url'), htm: 'GET', htu: PROOF_URI, iat: Math.floor(Date.now() / 1000), ath };
    made.push({ proof: await new SignJWT(claims).setProtectedHeader({ typ: 'dpop+jwt', alg: algorithm, jwk }).sign(privateKey), httpMethod: 'GET', httpUri: PROOF_URI });
  }
  return { made, thumbprint: await calculateJwkThumbprint(jwk) };
}
const PROOFS_PER_PASS = Math.min(2000, input.tokens.length);
const proofSets = { EdDSA: [], ES256: [] };
for (const algorithm of Object.keys(proofSets)) {
  for (let pass = 0; pass < 3; pass++) proofSets[algorithm].push(await proofs(algorithm, PROOFS_PER_PASS));
}
const proofLoop = (algorithm) => () => {
  const { made, thumbprint } = proofSets[algorithm].pop();
  const checker = new ProofChecker();
  return timedSync(made, (proof) => checker.check(proof, { accessToken: input.warm_token, keyThumbprint: thumbprint }));
};

// The machine is shared and noisy: the loops run in interleaved passes, alternating in
// order, and each reports its median pass (by CPU rate).
const PASSES = 3;
const warmTokens = new Array(input.warm_calls).fill(input.warm_token);
const joseWarmTokens = warmTokens.slice(0, Math.max(1, Math.floor(input.warm_calls / 20)));
const loops = {
  'jose.jwtVerify, cold (every token new)': () => timed(input.tokens, (t) => jwtVerify(t, jwks, joseOptions)),
  'TokenVerifier.verify, cold (every token new)': () => timedSync(input.tokens, (t) => verifier.verify(t, audience)),
  'local verifier, cold (every token new)': async () => {
    const fresh = await localVerification(input.tokens.length + 1); // nothing remembered yet
    return timedSync(input.tokens, (t) => fresh.decide(t, audience));
  },
  'jose.jwtVerify, warm (same token)': () => timed(joseWarmTokens, (t) => jwtVerify(t, jwks, joseOptions)),
  'local verifier, warm (same token)': () => timedSync(warmTokens, (t) => warm.decide(t, audience)),
  'ProofChecker.check, EdDSA proofs (every proof new)': proofLoop('EdDSA'),
  'ProofChecker.check, ES256 proofs (every proof new)': proofLoop('ES256'),
};
const passes = Object.fromEntries(Object.keys(loops).map((name) => [name, []]));
for (let pass = 0; pass < PASSES; pass++) {
  const names = Object.keys(loops);
  for (const name of pass % 2 === 0 ? names : names.reverse()) passes[name].push(await loops[name]());
}
const results = {};
for (const [name, outcomes] of Object.entries(passes)) {
  const sorted = [...outcomes].sort((a, b) => a.per_cpu_second - b.per_cpu_second);
  const median = sorted[Math.floor(sorted.length / 2)];
  if (!(median.per_second > 0 && median.per_cpu_second > 0)) throw new Error(`${name}: nothing measured`);
  results[name] = { ...median, calls: outcomes.reduce((sum, outcome) => sum + outcome.calls, 0) };
}
process.stdout.write(`${JSON.stringify(results)}\n`);
