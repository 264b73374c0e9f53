// The authority's contract, loaded from its .proto files at run time (no generated code).
// A packed package carries a copy in ./protos (made by `npm pack`, scripts/copy-protos.js);
// a checkout of the repository reads the repository's own protos/.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const FILE = 'authority/v1/authority.proto';
const CANDIDATES = [new URL('../protos/', import.meta.url), new URL('../../../protos/', import.meta.url)];

function protoRoot() {
  for (const candidate of CANDIDATES) {
    const root = fileURLToPath(candidate);
    if (existsSync(root + FILE)) return root;
  }
  throw new Error(`${FILE} not found next to the package (was it packed without its protos?)`);
}

let loaded;

/** The `authority.v1` package: the TokenAuthority service and its message types. */
export function authorityPackage() {
  if (loaded === undefined) {
    const definition = protoLoader.loadSync(FILE, {
      includeDirs: [protoRoot()],
      // uint64 and int64 arrive as decimal strings: nothing is rounded on the way.
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    loaded = grpc.loadPackageDefinition(definition).authority.v1;
  }
  return loaded;
}
