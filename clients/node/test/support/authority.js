// A real `authority serve` for the Node suite: the repository's Python venv's authority on
// a free loopback port, a temporary SQLite database, and small staleness bounds so the
// outage tests are quick. Missing authority: CI (CI=true) fails; a local run skips loudly.
import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { AuthorityClient } from '../../src/index.js';

const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
export const AUTHORITY_BIN = process.env.AUTHORITY_BIN ?? join(REPO, '.venv/bin/authority');

/** Why the suite cannot run here, or undefined; throws under CI instead of skipping. */
export function missingAuthority() {
  if (existsSync(AUTHORITY_BIN)) return undefined;
  const reason = `no authority at ${AUTHORITY_BIN}: run scripts/test (it creates .venv) first`;
  if (process.env.CI) throw new Error(reason);
  console.error(`WARNING: SKIPPING THE NODE INTEGRATION TESTS: ${reason}`);
  return reason;
}

/** Polls `condition` until it holds or `timeoutMs` passes; resolves to whether it held. */
export async function until(condition, timeoutMs, everyMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

export const SETTINGS = {
  AUTHORITY_MAX_STALENESS: '1',
  AUTHORITY_REVOCATION_POLL_INTERVAL: '0.1',
  AUTHORITY_AUDIENCES: 'api,billing',
  AUTHORITY_KEY_PUBLISH_AHEAD: '1',
  // A REVOKED answer waits this long for the replacing device's name (250 ms by default),
  // so a test asserting the name is not at the mercy of a loaded machine's first read.
  AUTHORITY_EXPLANATION_WAIT: '2s',
};

/** One authority on one database; start(), stop() and start() again on the same port. */
export class Authority {
  /** `env`: more AUTHORITY_* settings; `clientOptions`: how the readiness check connects. */
  constructor({ env = {}, clientOptions = {} } = {}) {
    this.dir = mkdtempSync(join(tmpdir(), 'authority-node-'));
    this.databaseUrl = `sqlite+aiosqlite:///${join(this.dir, 'authority.db')}`;
    this.env = { ...process.env, ...SETTINGS, AUTHORITY_KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'), ...env };
    this.clientOptions = clientOptions;
    this.port = 0;
    this.process = null;
  }

  get target() {
    return `127.0.0.1:${this.port}`;
  }

  async start() {
    const child = spawn(AUTHORITY_BIN, ['serve', '--listen', `127.0.0.1:${this.port}`, '--database-url', this.databaseUrl], {
      env: this.env, stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.process = child;
    let stderr = '';
    const listening = new Promise((resolve, reject) => {
      child.stderr.on('data', (chunk) => {
        stderr += chunk;
        const match = /listening on \S+:(\d+)/.exec(stderr);
        if (match) resolve(Number(match[1]));
      });
      child.once('exit', (code) => reject(new Error(`authority serve exited (${code}): ${stderr.slice(-2000)}`)));
    });
    let timer;
    const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('authority serve did not listen in 30 s')), 30_000); });
    try {
      this.port = await Promise.race([listening, timeout]);
    } finally {
      clearTimeout(timer);
    }
    // Ready when it answers; bounded.
    const client = new AuthorityClient(this.target, { timeoutMs: 1000, ...this.clientOptions });
    const ready = await until(async () => client.getSigningKeys().then(() => true, () => false), 20_000, 50);
    client.close();
    if (!ready) throw new Error('authority serve never answered GetSigningKeys');
    return this;
  }

  async stop() {
    const child = this.process;
    if (child === null || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    this.process = null;
  }

  /** `authority keys rotate` against the same database; resolves to the new kid. */
  rotateKeys(publishAhead = '1s') {
    const result = spawnSync(AUTHORITY_BIN, ['keys', 'rotate', '--database-url', this.databaseUrl, '--publish-ahead', publishAhead, '--json'], {
      env: this.env, encoding: 'utf8', timeout: 30_000,
    });
    if (result.status !== 0) throw new Error(`keys rotate failed: ${result.stderr}`);
    return JSON.parse(result.stdout).kid;
  }

  /** `authority migrate --renew-epoch` against the same database, without blocking the event
   * loop (a consumer in this process keeps following meanwhile); resolves to the new epoch. */
  renewEpoch() {
    return new Promise((resolve, reject) => {
      execFile(AUTHORITY_BIN, ['migrate', '--renew-epoch', '--database-url', this.databaseUrl], {
        env: this.env, encoding: 'utf8', timeout: 30_000,
      }, (error, stdout, stderr) => {
        const match = /epoch is now (\S+)/.exec(stdout);
        if (error || !match) reject(new Error(`migrate --renew-epoch failed: ${error?.message ?? ''} ${stderr}`));
        else resolve(match[1]);
      });
    });
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Runs the repository's Python with `code`, in the repository (for its test PKI). */
export function python(code) {
  const result = spawnSync(join(AUTHORITY_BIN, '..', 'python'), ['-c', code], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
  if (result.status !== 0) throw new Error(`python failed: ${result.stderr}`);
  return result.stdout;
}

/** `authority api-key new`: the key and the entry that configures it. */
export function newApiKey(name, roles) {
  const result = spawnSync(AUTHORITY_BIN, ['api-key', 'new', '--name', name, ...roles.flatMap((role) => ['--role', role])], {
    encoding: 'utf8', timeout: 30_000,
  });
  if (result.status !== 0) throw new Error(`api-key new failed: ${result.stderr}`);
  const [key, entry] = result.stdout.split('\n').map((line) => line.trim()).filter((line) => /^(tak_|\S+:\S+:sha256:)/.test(line));
  return { key, entry };
}

/** Log sink for tests: collects lines instead of printing them. */
export function quietLog() {
  const lines = [];
  return { lines, warn: (m) => lines.push(m), error: (m) => lines.push(String(m)), info: () => {} };
}
