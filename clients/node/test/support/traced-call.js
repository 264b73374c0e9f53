// One call to a grpc-js server with its call tracing on (GRPC_TRACE=server_call and
// GRPC_VERBOSITY=DEBUG, from the parent), grpc-js's lines going to redactedGrpcLogger or,
// with `plain` as the argument, as they are. Prints the lines it saw as JSON.
import * as grpc from '@grpc/grpc-js';

import { redactedGrpcLogger } from '../../src/index.js';

const lines = [];
const keep = (message, ...rest) => lines.push([message, ...rest].join(' '));
const collect = { error: keep, info: keep, debug: keep };
grpc.setLogger(process.argv[2] === 'plain' ? collect : redactedGrpcLogger(collect));

const bytes = { serialize: (value) => value, deserialize: (value) => value };
const GREET = { path: '/demo.Greeter/Greet', requestStream: false, responseStream: false,
  requestSerialize: bytes.serialize, requestDeserialize: bytes.deserialize,
  responseSerialize: bytes.serialize, responseDeserialize: bytes.deserialize };

const server = new grpc.Server();
server.addService({ Greet: GREET }, { Greet: (call, callback) => callback(null, Buffer.from('hi')) });
const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
  (error, bound) => (error ? reject(error) : resolve(bound))));
const Client = grpc.makeGenericClientConstructor({ Greet: GREET });
const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set('authorization', 'Bearer TOKEN-THAT-MUST-NOT-BE-LOGGED');
metadata.set('dpop', 'PROOF-THAT-MUST-NOT-BE-LOGGED');
await new Promise((resolve, reject) => client.Greet(Buffer.from('x'), metadata, { deadline: Date.now() + 5000 },
  (error) => (error ? reject(error) : resolve())));
client.close();
server.forceShutdown();
process.stdout.write(JSON.stringify(lines));
