// Run as a child process by lifecycle.test.js: closes a validator, a middleware and an
// interceptor before they have started, against the target in argv[2], and prints how
// each start settled. An unhandled rejection would end this process with exit code 1; a
// follower left running would keep it from exiting at all.
import { Validator, authInterceptor, requireToken } from '../../src/index.js';

const target = process.argv[2];
const log = { warn() {}, error() {} };
const options = { target, mode: 'local', log, clientOptions: { timeoutMs: 500 } };
const settled = (promise) => promise.then(() => 'resolved', (error) => `rejected: ${error?.name}`);

const validator = new Validator(options);
const started = validator.start();
await validator.close();
const middleware = requireToken({ ...options, audience: 'api' });
await middleware.close();
const interceptor = authInterceptor({ ...options, audience: 'api' });
await interceptor.close();
const outcomes = {
  validator: await settled(started),
  middleware: await settled(middleware.ready),
  interceptor: await settled(interceptor.ready),
};
// What a start did after settling (a follower it started) has had its turn by the next macrotask.
await new Promise((resolve) => { setImmediate(resolve); });
process.stdout.write(`${JSON.stringify(outcomes)}\n`);
