// A small Express API behind the token authority: one device at a time per user.
//
//   POST /login   {user, device}  signs the user in on that device (the password check
//                                 is the login service's, left out here)
//   GET  /api/me                  needs a valid token: who is signed in, on which device
//   POST /logout                  ends this device's session
//
// Run it: AUTHORITY=127.0.0.1:50051 node examples/express/app.js
import express from 'express';

import { AuthorityClient, InvalidArgument, requireToken } from '@token-authority/client';

/** The app, and close() to stop following the authority. */
export async function createApp({ authority, mode = 'local', audience = 'api' }) {
  const client = new AuthorityClient(authority);
  const auth = requireToken({ client, mode, audience });
  await auth.ready;

  const app = express();
  app.use(express.json());
  app.post('/login', async (req, res) => {
    const { user, device } = req.body ?? {};
    if (typeof user !== 'string' || typeof device !== 'string') {
      return res.status(400).json({ error: 'invalid_request', error_description: 'user and device are required' });
    }
    let signedIn;
    try {
      signedIn = await client.issueToken(user, device, { audience });
    } catch (error) {
      if (!(error instanceof InvalidArgument)) throw error;
      return res.status(400).json({ error: 'invalid_request', error_description: error.details });
    }
    return res.json({ access_token: signedIn.accessToken, replaced_sessions: signedIn.replacedSessionIds.length });
  });
  app.get('/api/me', auth, (req, res) => res.json({ user: req.auth.subject, device: req.auth.deviceId }));
  app.post('/logout', auth, async (req, res) => {
    await client.revokeToken({ sessionId: req.auth.sessionId, reason: 'logout' });
    res.status(204).end();
  });
  return { app, auth, close: async () => { await auth.close(); client.close(); } };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { app } = await createApp({ authority: process.env.AUTHORITY ?? '127.0.0.1:50051' });
  const port = Number(process.env.PORT ?? 3000);
  app.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${port}`));
}
