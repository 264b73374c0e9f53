// Compiled by `tsc --noEmit` in `npm test`: the declarations describe the package's use.
import * as grpc from '@grpc/grpc-js';
import express from 'express';

import {
  AuthorityClient, InvalidProof, InvalidToken, KeySet, LocalVerification, MAX_AUTHORIZATION_BYTES, ProofChecker, REASON_TEXTS, REQUEST_TEXTS, RequestProblem,
  SessionLimitReached, TokenVerifier, Validator, authInterceptor, claimsOf, grpcProofUri, normalizeUri, problemText, redactedGrpcLogger,
  requireToken, type AccessClaims, type Problem, type Proof, type ProofCheck, type Reason, type SigningKeySet,
} from '@token-authority/client';

export async function usage(): Promise<void> {
  const client = new AuthorityClient('127.0.0.1:50051', { apiKey: 'k', timeoutMs: 1000 });
  const issued = await client.issueToken('alice', 'laptop', { policy: 'REJECT', claims: { role: 'admin', n: 1 }, ttlMs: 60_000 });
  const when: Date = issued.expiresAt;
  const answer = await client.validateToken(issued.accessToken, 'api');
  if (answer.valid) { const claims: AccessClaims = answer.claims; void claims.extra; } else { const reason: Reason = answer.reason; void REASON_TEXTS[reason]; }
  const ended: number = await client.revokeToken({ sessionId: issued.sessionId });
  for await (const event of client.watchRevocations(0n)) { const sequence: bigint = event.sequence; void sequence; }
  for await (const event of client.watchRevocations(7n, { epoch: 'e1' })) { const epoch: string = event.epoch; void epoch; }
  const verifier = new TokenVerifier(await KeySet.fromJwks(await client.getSigningKeys()), { issuer: 'token-authority' });
  const keySet: SigningKeySet = await client.getSigningKeySet();
  const keySetVersion: number = keySet.version;
  for await (const event of client.watchRevocations(0n)) { if (event.kind === 'SIGNING_KEYS' && event.keySetVersion < keySetVersion) break; }
  const local = new LocalVerification({ issuer: 'token-authority' });
  const took: boolean = (await local.keys.replaceFetched(keySet)) && (await local.keys.replaceAnnounced('{}', 3, 'e1'))
    && (await local.keys.replace('{}', { fetched: true, version: 3 }));
  void took;
  try { verifier.verify('t', 'api'); } catch (error) { if (error instanceof InvalidToken) void error.reason; }
  const validator = await new Validator({ client, mode: 'local', maxStalenessMs: 5000 }).start();
  await validator.validate('t', 'api');
  const resumeFrom: [bigint, string] | undefined = validator.mirror ? [validator.mirror.lastSequence, validator.mirror.epoch] : undefined;
  void resumeFrom;
  void (SessionLimitReached.prototype.code === grpc.status.FAILED_PRECONDITION);

  const app = express();
  app.get('/me', requireToken({ client, mode: 'local', audience: 'api', publicPaths: ['/health'] }), (req, res) => {
    res.json({ user: req.auth?.subject });
  });
  grpc.setLogger(redactedGrpcLogger());
  grpc.setLogger(redactedGrpcLogger(console));
  const server = new grpc.Server({ interceptors: [authInterceptor({ target: '127.0.0.1:50051', audience: 'api' })] });
  server.addService({}, {});
  const claims = claimsOf({ metadata: new grpc.Metadata() });
  void [when, ended, claims];

  // Device-bound tokens: proofs through the client, the verifier, the validator and the gates.
  const proof: Proof = { proof: 'p', httpMethod: 'POST', httpUri: 'https://login.example.com/sign-in' };
  const bound = await client.issueToken('alice', 'phone', { proof });
  const type: string = bound.tokenType;
  await client.refreshToken(bound.refreshToken, { proof });
  await client.validateToken(bound.accessToken, 'api', { proof, timeoutMs: 500 });
  const checker = new ProofChecker({ maxAge: 30, replayCacheSize: 1000 });
  const boundVerifier = new TokenVerifier(await KeySet.fromJwks('{}'), { issuer: 'token-authority', proofs: checker });
  try {
    const thumbprint: string = boundVerifier.verify('t', 'api', proof).keyThumbprint;
    void [thumbprint, checker.check(proof, { accessToken: 't', keyThumbprint: thumbprint }), checker.replayCacheEntries];
  } catch (error) {
    if (error instanceof InvalidProof) { const check: ProofCheck = error.check; void check; }
  }
  await new Validator({ client, mode: 'local', proofMaxAge: 30, proofReplayCacheSize: 10 }).validate('t', 'api', proof);
  void [type, normalizeUri('https://a/'), grpcProofUri('a', '/s.S/M')];
  app.get('/dpop', requireToken({ client, audience: 'api', externalOrigin: 'https://api.example.com' }), (req, res) => {
    res.json({ key: req.auth?.keyThumbprint });
  });
  void authInterceptor({ client, audience: 'api', externalAuthority: 'orders.example.com' });

  // What a 400 invalid_request says, from the one table.
  const problem: Problem = RequestProblem.SEVERAL_HEADERS;
  const said: string = problemText(problem);
  const limit: number = MAX_AUTHORIZATION_BYTES;
  void [said, REQUEST_TEXTS.TOKEN_IN_QUERY, limit];
}
