// Copies the repository's protos/ into the package before `npm pack`, so an installed
// package carries its contract and depends on nothing outside it.
import { cpSync } from 'node:fs';

cpSync(new URL('../../../protos/authority/', import.meta.url), new URL('../protos/authority/', import.meta.url), {
  recursive: true,
});
