// The published package is honest: what `npm pack` ships, no install scripts, pinned
// runtime dependencies, and the strict JSON reader's edges the corpus does not spell out.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { test } from 'node:test';

import { parseObject } from '../src/json.js';

const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

test('the runtime dependencies are exactly grpc-js, proto-loader and jose, pinned', () => {
  assert.deepEqual(Object.keys(manifest.dependencies).sort(), ['@grpc/grpc-js', '@grpc/proto-loader', 'jose']);
  for (const version of Object.values(manifest.dependencies)) assert.match(version, /^\d+\.\d+\.\d+$/);
  for (const name of ['preinstall', 'install', 'postinstall', 'prepare']) assert.equal(manifest.scripts[name], undefined);
});

test('npm pack ships the sources, the declarations and the protos, and no tests', (t) => {
  // prepack copies the protos in; a checkout reads the repository's own, so the copy goes.
  t.after(() => rmSync(new URL('../protos/', import.meta.url), { recursive: true, force: true }));
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json'], {
    cwd: new URL('..', import.meta.url), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'],
  }));
  const files = packed.files.map((file) => file.path);
  for (const expected of ['src/index.js', 'src/verify.js', 'types/index.d.ts', 'protos/authority/v1/authority.proto', 'README.md']) {
    assert.ok(files.includes(expected), expected);
  }
  assert.ok(!files.some((file) => file.startsWith('test/') || file.startsWith('bench/') || file.includes('node_modules')));
});

test('strict JSON: duplicates at any depth, whitespace around the object, floats written as integers', () => {
  const malformed = ['{"a":1,"a":1}', '{"a":{"b":1,"b":2}}', ' {}', '{} ', '{"a":NaN}', '{"a":1e999}', '{"a":"\u0001"}',
    '{"a":01}', '{"a":"\\x41"}', '{"a":"\\u12G4"}', '[1]', '{"a":1,}', '{"a" 1}', '{"a":tru}'];
  for (const text of malformed) assert.throws(() => parseObject(text), undefined, text);
  const { value, integerNames, loneSurrogate } = parseObject('{"i":7,"f":7.0,"e":7e0,"n":{"deep":1},"s":"\\ud83d\\ude00"}');
  assert.deepEqual([...integerNames], ['i']);
  assert.equal(value.s, '\u{1F600}');
  assert.equal(loneSurrogate, false);
  assert.equal(parseObject('{"s":"\\ud83d"}').loneSurrogate, true);
});

test('a "__proto__" name is a plain member, never the prototype', () => {
  const { value } = parseObject('{"__proto__":{"admin":true},"sub":"alice"}');
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.equal(value.admin, undefined);
  assert.deepEqual(Object.keys(value), ['__proto__', 'sub']);
  assert.throws(() => parseObject('{"__proto__":1,"__proto__":2}'));
});
