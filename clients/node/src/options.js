// The checks a numeric option passes where it is given (a constructor), so that a wrong one
// is a TypeError or a RangeError naming it at once, not a timer that fires every
// millisecond (setTimeout takes Infinity, NaN and anything past 2^31 - 1 for 1), a deadline
// that never comes, or a staleness bound that never lets the mirror go stale.

/** The longest duration any option takes: ten years, the authority's own bound. */
export const MAX_DURATION_MS = 3650 * 86_400_000;
export const MAX_DURATION_SECONDS = MAX_DURATION_MS / 1000;
/** The longest delay a Node timer keeps (a longer one fires at once). */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** The most entries a cache option allows: well below the 2^24 a V8 Map can hold. */
export const MAX_ENTRIES = 10_000_000;

/**
 * `value` when it is a number in range, else a TypeError (not a number) or a RangeError
 * (NaN, infinite, out of range, or not an integer when `integer`), the message naming the
 * option `name`. In range: at least `min` (above it with `above`) and at most `max`.
 */
export function checkNumber(name, value, { min = 0, above = false, max = MAX_DURATION_MS, integer = false } = {}) {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, not ${typeof value}`);
  const inRange = Number.isFinite(value) && (above ? value > min : value >= min) && value <= max
    && (!integer || Number.isInteger(value));
  if (!inRange) {
    const kind = integer ? 'an integer' : 'a finite number';
    const bound = `${above ? 'above' : 'at least'} ${min} and at most ${max}`;
    throw new RangeError(`${name} must be ${kind} ${bound}, not ${value}`);
  }
  return value;
}

