#!/usr/bin/env bash
# compare.sh runs kvbench configurations in interleaved rounds and prints the
# median of each, so that a noisy machine slows every configuration alike.
#
#   cmd/kvbench/compare.sh [-rounds N] [-kvbench PATH] 'name|kvbench args' ...
#
# Each round runs every configuration once, in the order given; each run
# prints its kvbench summary line prefixed by the configuration's name. At
# the end, one line per configuration gives the medians of ops_s, p50_ms and
# p99_ms over its rounds, and ops_s as a ratio of the first configuration's
# (round by round, then the median of those ratios).
#
# Example: this build against an older one, and ours against etcd:
#
#   cmd/kvbench/compare.sh -rounds 5 \
#     'old|-cluster 3 -binary /tmp/raftexample-old -op get -duration 6s -warmup 2s' \
#     'new|-cluster 3 -binary ./raftexample -op get -duration 6s -warmup 2s'
#   cmd/kvbench/compare.sh -rounds 3 \
#     'ours|-cluster 3 -binary ./raftexample -op put -duration 8s -warmup 2s' \
#     'etcd|-target etcd -cluster 3 -etcd-binary /tmp/etcdbin/etcd -op put -duration 8s -warmup 2s'
set -euo pipefail

rounds=3
kvbench=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	-rounds) rounds=$2; shift 2 ;;
	-kvbench) kvbench=$2; shift 2 ;;
	-h|-help|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) break ;;
	esac
done
if [[ $# -eq 0 ]]; then
	echo "compare.sh: no configurations given (try -help)" >&2
	exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -z "$kvbench" ]]; then
	kvbench="$work/kvbench"
	(cd "$(dirname "$0")" && go build -o "$kvbench" .)
fi

for r in $(seq 1 "$rounds"); do
	for cfg in "$@"; do
		name=${cfg%%|*}
		args=${cfg#*|}
		# shellcheck disable=SC2086 # args are kvbench flags, split on purpose
		line=$("$kvbench" $args 2>"$work/stderr" | grep -E '^kvbench: target' | tail -1 || true)
		if [[ -z "$line" ]]; then
			echo "$name round $r: no summary line; kvbench said:" >&2
			tail -5 "$work/stderr" >&2
			continue
		fi
		echo "$name $line"
		echo "$r $name $line" >>"$work/runs"
	done
done

# Medians per configuration; field() takes NAME=value out of a summary line.
awk -v order="$(printf '%s\n' "$@" | cut -d'|' -f1 | paste -sd' ')" '
function field(line, name,    n, i, kv, parts) {
	n = split(line, parts, " ")
	for (i = 1; i <= n; i++) {
		split(parts[i], kv, "=")
		if (kv[1] == name) return kv[2]
	}
	return ""
}
function median(list,    n, a, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	if (n == 0) return "-"
	return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
{
	r = $1; name = $2
	ops[name] = ops[name] " " field($0, "ops_s")
	p50[name] = p50[name] " " field($0, "p50_ms")
	p99[name] = p99[name] " " field($0, "p99_ms")
	byround[r, name] = field($0, "ops_s")
	if (!(r in seen)) { seen[r] = 1; rs[++nr] = r }
}
END {
	n = split(order, names, " ")
	print ""
	printf "%-16s %10s %8s %8s %8s  %s\n", "config", "ops_s", "p50_ms", "p99_ms", "ratio", "ratio per round"
	for (i = 1; i <= n; i++) {
		nm = names[i]; ratios = ""
		for (k = 1; k <= nr; k++) {
			base = byround[rs[k], names[1]]; v = byround[rs[k], nm]
			if (base > 0 && v != "") ratios = ratios " " sprintf("%.2f", v / base)
		}
		printf "%-16s %10s %8s %8s %8s  %s\n", nm, median(ops[nm]), median(p50[nm]), median(p99[nm]), median(ratios), ratios
	}
}' "$work/runs"
