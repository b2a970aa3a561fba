#!/usr/bin/env bash
# TypeScript SDK (sdk/typescript): install the pinned packages from the lockfile, check that the generated schema
# matches openapi.yaml, type-check the public types, and run the node --test suite against a real sluice built
# from this tree, including test/install.test.js: the package as a user installs it (npm pack, the tarball into a
# fresh project, import, type-check against the installed types, a check against a real sluice).
set -euo pipefail
cd "$(dirname "$0")/../../sdk/typescript"
node --version
echo "--- npm ci"
npm ci --prefer-offline --no-audit --no-fund --loglevel=error
echo "--- src/schema.d.ts is current with openapi.yaml"
if ! npx --no-install openapi-typescript ../../openapi.yaml -o src/schema.d.ts --check; then
  echo "sdk/typescript/src/schema.d.ts is stale: run 'npm run generate' in sdk/typescript and commit it" >&2
  exit 1
fi
echo "--- tsc (types of the client and the README usage)"
npx --no-install tsc -p tsconfig.json
echo "--- node --test (the client against a real sluice; test/install.test.js: npm pack, install the tarball into a fresh project, import it, type-check, check)"
node --test test/
