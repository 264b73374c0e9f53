// Compiled by `tsc --noEmit` in `npm test`: the device calls as the declarations describe them.
import { AuthorityClient, type Session } from '@token-authority/client';

export async function devices(client: AuthorityClient): Promise<void> {
  const [listed]: Session[] = await client.listSessions('alice');
  const lastUsed: Date | null = listed.lastUsedAt;
  const label: string = `${listed.deviceName} (${listed.deviceClass})`;
  void [lastUsed, label];
}
