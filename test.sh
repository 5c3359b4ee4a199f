#!/usr/bin/env bash
# The project's test command (README.md): vet, staticcheck, every test with
# the race detector, then a few seconds of each fuzz target.
set -euo pipefail
cd "$(dirname "$0")"
STATICCHECK_VERSION=v0.8.2 # release 2026.2.2
echo "== go vet"
go vet ./...
echo "== staticcheck"
go run "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" ./...
echo "== go test -race"
go test -race -timeout 15m "$@" ./...
echo "== go test -fuzz (5s each)"
for target in FuzzDecodeRequest FuzzDecodeSnapshot FuzzHTTPHandler; do
	go test -run '^$' -fuzz "^${target}\$" -fuzztime 5s .
done
