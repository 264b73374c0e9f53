// Compiled by `tsc --noEmit` in `npm test`: the device calls as the declarations describe them.
import * as grpc from '@grpc/grpc-js';

import { AuthorityClient, SignInAborted, type Proof, type Session, type SignInPreview } from '@token-authority/client';

export async function devices(client: AuthorityClient, proof: Proof): Promise<void> {
  const preview: SignInPreview = await client.previewSignIn('alice', 'phone', { policy: 'REPLACE', deviceClass: 'mobile', proof, timeoutMs: 500 });
  const expected: string[] = preview.wouldReplace.map((s) => s.sessionId);
  try {
    await client.issueToken('alice', 'phone', { deviceClass: 'mobile', expectedReplacements: expected });
  } catch (error) {
    if (error instanceof SignInAborted) void (error.code === grpc.status.ABORTED);
  }
  await client.previewSignIn('alice', 'phone', { expectedReplacements: [] as const });

  const [listed]: Session[] = await client.listSessions('alice');
  const lastUsed: Date | null = listed.lastUsedAt;
  const label: string = `${listed.deviceName} (${listed.deviceClass})`;
  void [lastUsed, label];

  const ended: number = await client.revokeToken({ refreshToken: 'r', reason: 'logout' });
  const others: number = await client.revokeOtherSessions({ token: 't', reason: 'lost phone', timeoutMs: 500 });
  await client.revokeOtherSessions({ sessionId: listed.sessionId });
  // @ts-expect-error exactly one target
  await client.revokeToken({ token: 't', refreshToken: 'r' });
  // @ts-expect-error exactly one target
  await client.revokeOtherSessions({ token: 't', sessionId: 's' });
  // @ts-expect-error a target is needed
  await client.revokeOtherSessions({ reason: 'r' });
  // @ts-expect-error a subject's sessions are revokeToken's
  await client.revokeOtherSessions({ subject: 'alice' });
  void [ended, others];
}
