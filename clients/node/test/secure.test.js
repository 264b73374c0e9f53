// TLS, mutual TLS and API keys against a real `authority serve` that requires all three
// (certificates from the repository's test PKI, the key from `authority api-key new`).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { AuthorityClient, AuthorityError, PermissionDenied, Unauthenticated } from '../src/index.js';
import { Authority, missingAuthority, newApiKey, python } from './support/authority.js';

const skip = missingAuthority();
let authority;
let pki;
let apiKey;
let tls;

before(async () => {
  if (skip) return;
  pki = mkdtempSync(join(tmpdir(), 'authority-node-pki-'));
  python(`
from pathlib import Path
from tests.support.pki import CertificateAuthority
ca = CertificateAuthority("node test CA")
out = Path(${JSON.stringify(pki)})
(out / "ca.crt").write_bytes(ca.certificate_pem)
ca.issue("authority", dns=("localhost",), ips=("127.0.0.1",)).write(out, "server")
ca.issue("node-consumer", client=True).write(out, "client")
`);
  const issued = newApiKey('node-consumer', ['issuer', 'verifier']);
  apiKey = issued.key;
  const file = (name) => readFileSync(join(pki, name));
  tls = { ca: file('ca.crt'), cert: file('client.crt'), key: file('client.key') };
  authority = await new Authority({
    env: {
      AUTHORITY_TLS_CERT_FILE: join(pki, 'server.crt'), AUTHORITY_TLS_KEY_FILE: join(pki, 'server.key'),
      AUTHORITY_TLS_CLIENT_CA_FILE: join(pki, 'ca.crt'), AUTHORITY_API_KEYS: issued.entry,
    },
    clientOptions: { tls, apiKey },
  }).start();
});
after(async () => {
  await authority?.close();
  if (pki) rmSync(pki, { recursive: true, force: true });
});

test('mTLS with an API key signs in and validates', { skip }, async () => {
  const client = new AuthorityClient(authority.target, { tls, apiKey });
  try {
    const signedIn = await client.issueToken('node-secure', 'laptop');
    assert.equal((await client.validateToken(signedIn.accessToken)).valid, true);
  } finally {
    client.close();
  }
});

test('without the API key the certificate alone has no role: PermissionDenied', { skip }, async () => {
  const client = new AuthorityClient(authority.target, { tls });
  try {
    await assert.rejects(client.issueToken('node-secure', 'laptop'), (error) => {
      assert.ok(error instanceof PermissionDenied && error.code === grpc.status.PERMISSION_DENIED, `${error.name} ${error.code}`);
      return true;
    });
  } finally {
    client.close();
  }
});

test('a wrong API key is Unauthenticated, and no key is in the message', { skip }, async () => {
  const wrong = `${apiKey.slice(0, -4)}AAAA`;
  const client = new AuthorityClient(authority.target, { tls, apiKey: wrong });
  try {
    await assert.rejects(client.issueToken('node-secure', 'laptop'), (error) => {
      assert.ok(error instanceof Unauthenticated && error.code === grpc.status.UNAUTHENTICATED, `${error.name} ${error.code}`);
      assert.ok(!error.message.includes(wrong) && !error.message.includes(apiKey));
      return true;
    });
  } finally {
    client.close();
  }
});

test('TLS without a client certificate is refused by the mutual-TLS authority', { skip }, async () => {
  const client = new AuthorityClient(authority.target, { tls: { ca: tls.ca }, apiKey, timeoutMs: 2000 });
  try {
    await assert.rejects(client.getSigningKeys(), (error) => error instanceof AuthorityError && error.code !== grpc.status.OK);
  } finally {
    client.close();
  }
});

test('half a client certificate is refused before connecting', { skip }, () => {
  assert.throws(() => new AuthorityClient('127.0.0.1:1', { tls: { ca: tls.ca, cert: tls.cert } }), /cert and key/);
});
