// Strict JSON, read exactly as the Python verifier reads it (json with its strict hooks):
// one object, no whitespace around it, no duplicate names at any level, no NaN or
// Infinity, no number a double cannot hold, no raw control characters in strings, and no
// nesting deeper than MAX_JSON_DEPTH. JSON.parse cannot be used: it keeps the last of two
// duplicate names and cannot tell `1e10` or `300.0` (floats to Python) from an integer.

/** The payload object and 32 levels of claims in it (as the Python verifier). */
export const MAX_JSON_DEPTH = 33;

/** Raised for any text that is not strict JSON; carries no part of the text. */
export class JsonError extends Error {}

/**
 * `value` with every object and array in it frozen, and returned. Claims are shared: a
 * token's verified claims are remembered and handed to every request that presents it
 * (local mode), so no request's code may change them for the others, least of all the
 * key thumbprint its proof is checked against.
 */
export function frozen(value) {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const item of Object.values(value)) frozen(item);
  }
  return value;
}

class ReadOnlyDate extends Date {}
for (const name of Object.getOwnPropertyNames(Date.prototype).filter((setter) => setter.startsWith('set'))) {
  Object.defineProperty(ReadOnlyDate.prototype, name, {
    value() { throw new TypeError('verified claims are read-only: change a copy (new Date(date))'); },
  });
}
Object.freeze(ReadOnlyDate.prototype);

/**
 * A Date at `ms` whose setters throw: a frozen Date still changes by setTime, and claims'
 * dates are shared as the rest of them are (see frozen).
 */
export function readOnlyDate(ms) {
  return Object.freeze(new ReadOnlyDate(ms));
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;
const PLAIN_RUN = /[^"\\\u0000-\u001f]*/y;
const HEX4 = /^[0-9a-fA-F]{4}$/;
const ESCAPES = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

/**
 * The object `text` holds. `integerNames` (of the outer object) lists the names whose
 * value was written as an integer literal; `loneSurrogate` says whether any string or
 * name holds a lone surrogate (text with no UTF-8 form); `nulName` whether the name of a
 * member of any object, at any depth, holds NUL (U+0000), which no claim's name may.
 */
export function parseObject(text) {
  const parser = new Parser(text);
  if (text.charCodeAt(0) !== 0x7b) throw new JsonError();
  const value = parser.object(1, true);
  if (parser.i !== text.length) throw new JsonError();
  return { value, integerNames: parser.integerNames, loneSurrogate: parser.loneSurrogate, nulName: parser.nulName };
}

class Parser {
  constructor(text) {
    this.s = text;
    this.i = 0;
    this.integerNames = new Set();
    this.loneSurrogate = false;
    this.nulName = false;
    this.wasInteger = false;
  }

  ws() {
    const s = this.s;
    let c = s.charCodeAt(this.i);
    while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = s.charCodeAt(++this.i);
  }

  value(depth) {
    const s = this.s;
    const c = s.charCodeAt(this.i);
    this.wasInteger = false;
    if (c === 0x7b) return this.object(depth + 1, false);
    if (c === 0x5b) return this.array(depth + 1);
    if (c === 0x22) return this.string();
    if (c === 0x74 && s.startsWith('true', this.i)) { this.i += 4; return true; }
    if (c === 0x66 && s.startsWith('false', this.i)) { this.i += 5; return false; }
    if (c === 0x6e && s.startsWith('null', this.i)) { this.i += 4; return null; }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    throw new JsonError();
  }

  number() {
    NUMBER.lastIndex = this.i;
    const match = NUMBER.exec(this.s);
    if (match === null) throw new JsonError();
    this.i = NUMBER.lastIndex;
    const value = Number(match[0]);
    // Past a double's range (1e999, 400 digits): no consumer could hold it.
    if (!Number.isFinite(value)) throw new JsonError();
    this.wasInteger = match[1] === undefined && match[2] === undefined;
    return value;
  }

  string() {
    const s = this.s;
    let i = this.i + 1;
    let out = '';
    let escapedSurrogate = false;
    for (;;) {
      PLAIN_RUN.lastIndex = i;
      PLAIN_RUN.exec(s);
      const end = PLAIN_RUN.lastIndex;
      if (end > i) out += s.slice(i, end);
      i = end;
      const c = s.charCodeAt(i);
      if (c === 0x22) break;
      if (c !== 0x5c) throw new JsonError(); // a raw control character, or the end
      const e = s[i + 1];
      if (e === 'u') {
        const hex = s.slice(i + 2, i + 6);
        if (!HEX4.test(hex)) throw new JsonError();
        const unit = parseInt(hex, 16);
        if (unit >= 0xd800 && unit <= 0xdfff) escapedSurrogate = true;
        out += String.fromCharCode(unit);
        i += 6;
      } else {
        const char = ESCAPES[e];
        if (char === undefined || !Object.hasOwn(ESCAPES, e)) throw new JsonError();
        out += char;
        i += 2;
      }
    }
    this.i = i + 1;
    // Only an escape can make a surrogate: UTF-8 has no form for one.
    if (escapedSurrogate && !out.isWellFormed()) this.loneSurrogate = true;
    return out;
  }

  object(depth, outer) {
    if (depth > MAX_JSON_DEPTH) throw new JsonError();
    const s = this.s;
    const result = {};
    this.i++;
    this.ws();
    if (s.charCodeAt(this.i) === 0x7d) { this.i++; return result; }
    for (;;) {
      if (s.charCodeAt(this.i) !== 0x22) throw new JsonError();
      const name = this.string();
      if (name.includes('\0')) this.nulName = true;
      this.ws();
      if (s.charCodeAt(this.i) !== 0x3a) throw new JsonError();
      this.i++;
      this.ws();
      const value = this.value(depth);
      // Two values for one name: some readers take the first, some the last.
      if (Object.hasOwn(result, name)) throw new JsonError();
      if (outer && typeof value === 'number' && this.wasInteger) this.integerNames.add(name);
      if (name === '__proto__') {
        Object.defineProperty(result, name, { value, enumerable: true, writable: true, configurable: true });
      } else {
        result[name] = value;
      }
      this.ws();
      const c = s.charCodeAt(this.i++);
      if (c === 0x7d) return result;
      if (c !== 0x2c) throw new JsonError();
      this.ws();
    }
  }

  array(depth) {
    if (depth > MAX_JSON_DEPTH) throw new JsonError();
    const s = this.s;
    const result = [];
    this.i++;
    this.ws();
    if (s.charCodeAt(this.i) === 0x5d) { this.i++; return result; }
    for (;;) {
      result.push(this.value(depth));
      this.ws();
      const c = s.charCodeAt(this.i++);
      if (c === 0x5d) return result;
      if (c !== 0x2c) throw new JsonError();
      this.ws();
    }
  }
}
