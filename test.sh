#!/usr/bin/env bash
# The project's test command (README.md): vet, staticcheck, every test with
# the race detector, then 10 000 inputs of each fuzz target. (A count, not a
# duration: with -fuzztime as a duration, go1.26's fuzz coordinator can fail
# a target with "context deadline exceeded" at the deadline, golang/go#75804.)
set -euo pipefail
cd "$(dirname "$0")"
STATICCHECK_VERSION=v0.8.2 # release 2026.2.2
echo "== go vet"
go vet ./...
echo "== staticcheck"
go run "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" ./...
echo "== go test -race"
go test -race -timeout 15m "$@" ./...
echo "== go test -fuzz (10000 inputs each)"
# Each entry is a package and a fuzz target in it (go test -fuzz takes one
# package at a time).
for spec in ./internal/wire:FuzzDecodeRequest ./internal/wire:FuzzDecodeSnapshot .:FuzzHTTPHandler; do
	pkg=${spec%%:*} target=${spec#*:}
	go test -run '^$' -fuzz "^${target}\$" -fuzztime 10000x "$pkg"
done
