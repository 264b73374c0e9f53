// A logger for grpc-js that keeps metadata values out of its lines.
//
// grpc-js logs, at ERROR and so by default, every metadata entry it cannot accept, value
// included: `Failed to add metadata entry authorization: Bearer <token>…`. It does so for
// a value with a character that metadata may not carry (é, say), when the call arrives and
// before any interceptor sees it. So a caller's token, or any credential sent in metadata,
// reaches the service's log. Installed with `grpc.setLogger(redactedGrpcLogger())`, on the
// grpc-js the server is built with, that line names the entry and leaves the value out.
// With tracing on (GRPC_TRACE=server_call or all, GRPC_VERBOSITY=DEBUG), grpc-js also
// writes every request's metadata, the authorization and DPoP headers with the rest: such
// a line keeps the entries' names and leaves every value out. Every other line passes as
// it is.

const METADATA_ENTRY = /^Failed to add metadata entry ([^:]*):/;
// server_call's trace of a request: `... | server_call | Request to /pkg.Service/Method
// received headers {"name":["value"],...}` (grpc-js server-interceptors.js).
const RECEIVED_HEADERS = /^([\s\S]* received headers )([\s\S]*)$/;
// Of an entry's name, at most this much is shown.
const NAME_SHOWN = 64;

// grpc-js's own default: every level to stderr, after a letter for the level.
const STDERR = Object.freeze({
  error: (message, ...rest) => console.error(`E ${message}`, ...rest),
  info: (message, ...rest) => console.error(`I ${message}`, ...rest),
  debug: (message, ...rest) => console.error(`D ${message}`, ...rest),
});

/** `message` with the value of a refused metadata entry left out; anything else as it is. */
export function redactedGrpcLine(message) {
  if (typeof message !== 'string') return message;
  const entry = METADATA_ENTRY.exec(message);
  if (entry !== null) {
    return `Failed to add metadata entry ${entry[1].slice(0, NAME_SHOWN)}: its value is not valid metadata (not shown)`;
  }
  const received = RECEIVED_HEADERS.exec(message);
  if (received !== null) return `${received[1]}${headerNames(received[2])}`;
  return message;
}

/** The names of a traced metadata object, each value left out; nothing of what does not parse. */
function headerNames(json) {
  let names;
  try {
    const parsed = JSON.parse(json);
    names = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? Object.keys(parsed) : null;
  } catch {
    names = null;
  }
  if (names === null) return '(not shown)';
  return `${JSON.stringify(Object.fromEntries(names.map((name) => [name.slice(0, NAME_SHOWN), '(not shown)'])))}`;
}

/**
 * A logger for `grpc.setLogger`: grpc-js's lines go to `logger` (by default to stderr, as
 * grpc-js writes them), a refused metadata entry's without its value. A level `logger`
 * lacks goes to its `error`, as grpc-js does.
 */
export function redactedGrpcLogger(logger = STDERR) {
  const level = (name) => (message, ...rest) => {
    const write = logger[name] ?? logger.error;
    write.call(logger, redactedGrpcLine(message), ...rest);
  };
  return Object.freeze({ error: level('error'), info: level('info'), debug: level('debug') });
}
