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
}
