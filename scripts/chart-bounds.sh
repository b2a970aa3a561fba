#!/usr/bin/env bash
# chart-bounds.sh SLUICE_BINARY: the chart refuses exactly what the binary refuses. For every bound of sluice's
# validation that a chart value reaches (app/load.go validate, domain.Policy.Validate), both sides of it:
#   inside:  `helm template` renders, and `sluice config check` accepts the rendered config.yaml under the rendered
#            env (run as the kubelet would, through podrun);
#   outside: `helm template` fails naming the value, and the same values rendered with the chart's own checks off
#            (--skip-schema-validation --set testOnlySkipChartChecks=true) are refused by `sluice config check`.
# The bounds app/config.go declares (range tags) must each have their rows. A bound the binary moves, or a chart
# range that drifts from it, fails here. Called by scripts/test.d/40-chart.sh;
# prints "ok"/"FAIL"/"skip" lines and "bounds: N passed, N failed, N skipped".
set -uo pipefail
BIN="${1:?usage: chart-bounds.sh SLUICE_BINARY}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHART="$ROOT/deploy/helm/sluice"
# shellcheck source=chart-tools.sh
source "$ROOT/scripts/chart-tools.sh"
set +e
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
TPL=("$HELM" template sluice "$CHART" --namespace limits --kube-version "$K8S_VERSION")
passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
skip() { skipped=$((skipped + 1)); printf 'skip %s\n' "$*"; }

# config_check MANIFESTS: `sluice config check` on the rendered config file, under the Deployment's env. podrun
# rewrites mount paths in env values only, not inside config.yaml: the rows of the RLS front end point its config
# directory (rls.config_dir: /etc/sluice/rls in the file) at podrun's copy through the environment.
EXTRA=()
config_check() {
	rm -rf "$WORK/pod"
	# The database URL is given (config check never connects), so a render whose database Secret is missing (store
	# postgress with the checks off) still reaches the binary.
	"$PODRUN" -kind Deployment -root "$WORK/pod" -secret "sluice-postgresql/url=postgres://sluice@127.0.0.1:5432/sluice" \
		"${EXTRA[@]}" -args "config check /etc/sluice/config.yaml" -- "$BIN" <"$1" >"$WORK/check.log" 2>&1
}

# Does this binary read `resolution` yet (the sliding_window fields)? The rows that need it wait for it.
printf 'listen: 127.0.0.1:0\npolicies:\n  - {name: p, limit: 1, window: 1m, algorithm: sliding_window, resolution: 1s}\n' >"$WORK/res.yaml"
has_resolution=1
if ! "$BIN" config check "$WORK/res.yaml" >"$WORK/res.log" 2>&1; then has_resolution=""; fi

# Does this binary read sluice's one duration grammar (whole numbers, units d h m s ms in order), which the chart
# enforces? Until it does, it still accepts 1.5h and 30m1h, and the rows about the grammar wait for it.
printf 'listen: 127.0.0.1:0\npolicies:\n  - {name: p, limit: 1, window: 1.5h}\n' >"$WORK/grammar.yaml"
strict_grammar=""
if ! "$BIN" config check "$WORK/grammar.yaml" >"$WORK/grammar.log" 2>&1; then strict_grammar=1; fi

P='policies[0].name=p,policies[0].limit=1'
PW="$P,policies[0].window=1m"
SW="$PW,policies[0].algorithm=sliding_window"
RS="store=redis,redis.addrs[0]=127.0.0.1:6379"
RLS='rls.enabled=true,rls.config.config\.yaml=domain: chart-bounds'
# setting | base --set (both sides) | inside | outside | chart message (ERE) | binary message (ERE)
ROWS=(
	"janitorInterval (min 1m)|store=postgres|janitorInterval=1m|janitorInterval=59s|janitorInterval|janitor_interval"
	"janitorInterval=30s|store=postgres|janitorInterval=1m0s|janitorInterval=30s|janitorInterval|janitor_interval"
	"postgres.statementTimeout (min 1ms)|store=postgres|postgres.statementTimeout=1ms|postgres.statementTimeout=0ms|postgres.statementTimeout|statement_timeout"
	"postgres.statementTimeout (max 1m)|store=postgres|postgres.statementTimeout=1m|postgres.statementTimeout=1m1ms|postgres.statementTimeout|statement_timeout"
	"postgres.statementTimeout=5m|store=postgres|postgres.statementTimeout=60s|postgres.statementTimeout=5m|postgres.statementTimeout|statement_timeout"
	"postgres.maxConns (min 1)|store=postgres,postgres.lanes=0|postgres.maxConns=1|postgres.maxConns=0|/postgres/maxConns|max_conns"
	"postgres.maxConns (max 1000)|store=postgres|postgres.maxConns=1000|postgres.maxConns=1001|/postgres/maxConns|max_conns"
	"postgres.lanes (max maxConns)|store=postgres,postgres.maxConns=8|postgres.lanes=8|postgres.lanes=9|postgres.lanes|lanes|LANES"
	"postgres.lanes (min 0)|store=postgres|postgres.lanes=0|postgres.lanes=-1|/postgres/lanes|lanes|LANES"
	"memory.maxKeys (min 1)||memory.maxKeys=1|memory.maxKeys=0|/memory/maxKeys|max_keys"
	"http.maxBodyBytes (min 1024)||http.maxBodyBytes=1024|http.maxBodyBytes=1023|/http/maxBodyBytes|max_body_bytes"
	"http.maxBodyBytes=10||http.maxBodyBytes=65536|http.maxBodyBytes=10|/http/maxBodyBytes|max_body_bytes"
	"http.maxBodyBytes (max 16Mi)||http.maxBodyBytes=16777216|http.maxBodyBytes=16777217|/http/maxBodyBytes|max_body_bytes"
	"http.readHeaderTimeout (max 10m)||http.readHeaderTimeout=10m|http.readHeaderTimeout=10m1ms|http.readHeaderTimeout|read_header_timeout"
	"http.readHeaderTimeout (min >0)||http.readHeaderTimeout=1ms|http.readHeaderTimeout=0s|http.readHeaderTimeout|read_header_timeout"
	"http.readTimeout (max 10m)||http.readTimeout=10m|http.readTimeout=601s|http.readTimeout|read_timeout"
	"http.readTimeout (min >0)||http.readTimeout=1ms|http.readTimeout=0s|http.readTimeout|read_timeout"
	"http.idleTimeout (min >0)||http.idleTimeout=1ms|http.idleTimeout=0ms|http.idleTimeout|idle_timeout"
	"http.idleTimeout (max 10m)||http.idleTimeout=10m|http.idleTimeout=11m|http.idleTimeout|idle_timeout"
	"drainTimeoutSeconds (min 1s)||drainTimeoutSeconds=1|drainTimeoutSeconds=0|/drainTimeoutSeconds|drain_timeout"
	"drainTimeoutSeconds (max 10m)||drainTimeoutSeconds=600|drainTimeoutSeconds=601|/drainTimeoutSeconds|drain_timeout"
	"store (enum)||store=postgres|store=postgress|/store|store"
	"log.level (enum)||log.level=debug|log.level=verbose|/log/level|level"
	"log.format (enum)||log.format=text|log.format=yaml|/log/format|format"
	"metrics.keyLabel (enum)||metrics.keyLabel=truncate|metrics.keyLabel=raw|/metrics/keyLabel|key_label"
	"metrics.topDeniedKeys (min 0)||metrics.topDeniedKeys=0|metrics.topDeniedKeys=-1|/metrics/topDeniedKeys|top_denied_keys"
	"metrics.topDeniedKeys (max 64)||metrics.topDeniedKeys=64|metrics.topDeniedKeys=65|/metrics/topDeniedKeys|top_denied_keys"
	"tokens.generate=null||tokens.generate[0].name=ops,tokens.generate[0].role=check|tokens.generate=null|/tokens|tokens|loopback"
	"tokens.generate[].role (enum)||tokens.generate[0].name=ops,tokens.generate[0].role=admin|tokens.generate[0].name=ops,tokens.generate[0].role=root|/tokens/generate/0/role|role"
	"policies[].name (pattern)||$PW,policies[0].name=a.b_c-d|$PW,policies[0].name=Login|/policies/0/name|name"
	"policies[].name (64 bytes)||$PW,policies[0].name=$(printf 'n%.0s' {1..64})|$PW,policies[0].name=$(printf 'n%.0s' {1..65})|/policies/0/name|name"
	"two policies with one name||$PW,policies[1].name=q,policies[1].limit=1,policies[1].window=1m|$PW,policies[1].name=p,policies[1].limit=1,policies[1].window=1m|duplicate policy name|duplicate"
	"policies[].limit (min 1)||$PW,policies[0].limit=1|$PW,policies[0].limit=0|/policies/0/limit|limit"
	"policies[].limit (max 2^53-1)||$PW,policies[0].limit=9007199254740991|$PW,policies[0].limit=9007199254740992|/policies/0/limit|limit"
	"policies[].window (min 1s)||$P,policies[0].window=1s|$P,policies[0].window=999ms|policies.0..?window|window"
	"policies[].window (max 31d)||$P,policies[0].window=31d|$P,policies[0].window=31d1ms|policies.0..?window|window"
	"policies[].window=32d||$P,policies[0].window=744h|$P,policies[0].window=32d|policies.0..?window|window"
	"policies[].window (whole ms)||$P,policies[0].window=1s500ms|$P,policies[0].window=1s500us|policies.0..?window|window"
	"policies[].algorithm (enum)||$PW,policies[0].algorithm=fixed_window|$PW,policies[0].algorithm=leaky_bucket|/policies/0/algorithm|algorithm"
	"policies[].algorithm token_bucket||$PW,policies[0].algorithm=token_bucket|$PW,policies[0].algorithm=tokenbucket|/policies/0/algorithm|algorithm"
	"policies[].algorithm sliding_window||$PW,policies[0].algorithm=sliding_window|$PW,policies[0].algorithm=sliding-window|/policies/0/algorithm|algorithm"
	"policies[].failure_mode (enum)||$PW,policies[0].failure_mode=allow|$PW,policies[0].failure_mode=open|/policies/0/failure_mode|failure_mode"
	"GRAMMAR duration grammar: whole numbers (janitorInterval=1.5h)|store=postgres|janitorInterval=1h30m|janitorInterval=1.5h|janitorInterval|janitor"
	"GRAMMAR duration grammar: units in order (policies[].window=30m1h)||$P,policies[0].window=1h30m|$P,policies[0].window=30m1h|policies.0..?window|window"
	"GRAMMAR duration grammar: no unit below ms (http.idleTimeout=1000000us)||http.idleTimeout=1s|http.idleTimeout=1000000us|http.idleTimeout|idle_timeout"
	"IF:redis redis.timeout (min 1ms)|$RS|redis.timeout=1ms|redis.timeout=0ms|redis.timeout|timeout"
	"IF:redis redis.timeout (max 1m)|$RS|redis.timeout=1m|redis.timeout=1m1ms|redis.timeout|timeout"
	"IF:redis redis.waitReplicas (min 0)|$RS|redis.waitReplicas=0|redis.waitReplicas=-1|/redis/waitReplicas|wait_replicas"
	"IF:redis redis.waitReplicas (max 16)|$RS|redis.waitReplicas=16|redis.waitReplicas=17|/redis/waitReplicas|wait_replicas"
	"IF:redis redis.waitTimeout (min 1ms)|$RS|redis.waitTimeout=1ms|redis.waitTimeout=0ms|redis.waitTimeout|wait_timeout"
	"IF:redis redis.waitTimeout (max 10s)|$RS|redis.waitTimeout=10s|redis.waitTimeout=10s1ms|redis.waitTimeout|wait_timeout"
	"IF:rls rls.reloadInterval (min 1s)|$RLS|rls.reloadInterval=1s|rls.reloadInterval=999ms|rls.reloadInterval|reload_interval"
	"IF:rls rls.reloadInterval 0s (never reload)|$RLS|rls.reloadInterval=0s|rls.reloadInterval=1.5s|rls.reloadInterval|reload_interval"
	"IF:rls rls.algorithm (enum)|$RLS|rls.algorithm=sliding_window|rls.algorithm=leaky_bucket|/rls/algorithm|algorithm"
	"IF:rls rls.failureMode (enum)|$RLS|rls.failureMode=allow|rls.failureMode=open|/rls/failureMode|failure_mode"
	"RES policies[].resolution (min 1ms; 0s is the default)||$SW,policies[0].resolution=1ms|$SW,policies[0].resolution=-1ms|policies.0..?resolution|resolution"
	"RES policies[].resolution 0s (the default, window/60)||$SW,policies[0].resolution=0s|$SW,policies[0].resolution=0.5s|policies.0..?resolution|resolution"
	"RES policies[].resolution (max window)||$SW,policies[0].resolution=1m|$SW,policies[0].resolution=1m1ms|policies.0..?resolution|resolution"
	"RES policies[].resolution (whole ms)||$SW,policies[0].resolution=1s500ms|$SW,policies[0].resolution=1500500us|policies.0..?resolution|resolution"
	"RES policies[].resolution (sliding_window only)||$SW,policies[0].resolution=1s|$PW,policies[0].algorithm=token_bucket,policies[0].resolution=1s|policies.0..?resolution|resolution"
)

# Every bound app/config.go declares (`range:"MIN..MAX"` tags) has a row for each of its sides, so a bound added to
# the binary fails here until the chart and this table follow it. A row covers a setting when its binary-message
# column is the setting's YAML name and its label says "(min ..." or "(max ...".
ranges="$(grep -o 'yaml:"[a-z_]*" range:"[^"]*"' "$ROOT/app/config.go" | sed 's/yaml:"\([a-z_]*\)" range:"\([^"]*\)"/\1 \2/')"
if [[ -z "$ranges" ]]; then
	bad "app/config.go declares no range:\"MIN..MAX\" tags any more: read the binary's bounds from where they now live"
fi
# The settings the chart renders into config.yaml for some value set in ci/ (a bound of a setting the chart never
# writes, e.g. redis.policy_refresh, cannot be reached from values).
rendered=""
for values in "$CHART"/ci/*-values.yaml; do
	rendered+="$("${TPL[@]}" -f "$values" --show-only templates/configmap.yaml 2>/dev/null | sed -n 's/^ *-\{0,1\} *\([a-z_]*\):.*/\1/p')"$'\n'
done
while read -r leaf range; do
	[[ -z "$leaf" ]] && continue
	if ! grep -qx "$leaf" <<<"$rendered"; then
		skip "app/config.go bounds $leaf to $range: the chart does not render it"
		continue
	fi
	lo="${range%%..*}" hi="${range#*..}"
	for side in min max; do
		[[ "$side" == min && -z "$lo" ]] && continue
		[[ "$side" == max && -z "$hi" ]] && continue
		found=""
		for row in "${ROWS[@]}"; do
			IFS='|' read -r label _ _ _ _ binmsg _ <<<"$row"
			label="${label#IF:* }"
			if [[ "$binmsg" == "$leaf" && "$label" == *"($side "* ]]; then found="$label"; fi
		done
		if [[ -n "$found" ]]; then
			ok "app/config.go bounds $leaf to $range: its $side is walked ($found)"
		else
			bad "app/config.go bounds $leaf to $range: no row walks its $side (add one to ROWS in $0, and the range to the chart)"
		fi
	done
done <<<"$ranges"
# And every choice list (`oneof:"a b"` tags) has an "(enum)" row.
choices="$(grep -o 'yaml:"[a-z_]*"[^`]*oneof:"[^"]*"' "$ROOT/app/config.go" | sed 's/yaml:"\([a-z_]*\)".*oneof:"\([^"]*\)"/\1 \2/')"
while read -r leaf values; do
	[[ -z "$leaf" ]] && continue
	found=""
	for row in "${ROWS[@]}"; do
		IFS='|' read -r label _ _ _ _ binmsg _ <<<"$row"
		if [[ "$binmsg" == "$leaf" && "$label" == *"(enum)"* ]]; then found="$label"; fi
	done
	if [[ -n "$found" ]]; then
		ok "app/config.go limits $leaf to {$values}: walked ($found)"
	else
		bad "app/config.go limits $leaf to {$values}: no (enum) row walks it (add one to ROWS in $0)"
	fi
done <<<"$choices"

for row in "${ROWS[@]}"; do
	IFS='|' read -r label base inside outside chartmsg binmsg binmsg2 <<<"$row"
	EXTRA=()
	if [[ "$label" == "IF:rls "* ]]; then EXTRA=(-env "SLUICE_RLS_CONFIG_DIR=$WORK/pod/etc/sluice/rls"); fi
	if [[ "$label" == "IF:"* ]]; then
		# A row for an optional part of the chart (e.g. the Redis store's values) runs once the chart has it.
		need="${label%% *}" need="${need#IF:}" label="${label#* }"
		if ! grep -q "^$need:" "$CHART/values.yaml"; then
			skip "$label: the chart has no $need values (yet)"
			continue
		fi
	fi
	if [[ "$label" == "GRAMMAR "* ]]; then
		label="${label#GRAMMAR }"
		if [[ -z "$strict_grammar" ]]; then
			skip "$label: this sluice binary still accepts fractional durations (window 1.5h passes its config check)"
			continue
		fi
	fi
	if [[ "$label" == "RES "* ]]; then
		label="${label#RES }"
		if [[ -z "$has_resolution" ]]; then
			skip "$label: this sluice binary has no policy resolution setting yet ($(head -c 160 "$WORK/res.log" | tr '\n' ' '))"
			continue
		fi
	fi
	set_in=(--set "$inside")
	set_out=(--set "$outside")
	if [[ -n "$base" ]]; then set_in=(--set "$base" "${set_in[@]}") && set_out=(--set "$base" "${set_out[@]}"); fi
	binre="$binmsg${binmsg2:+|$binmsg2}"

	# Inside: the chart renders it and the binary starts with it.
	if ! "${TPL[@]}" "${set_in[@]}" >"$WORK/in.yaml" 2>"$WORK/in.log"; then
		bad "$label: inside ($inside) must render; helm said: $(head -c 300 "$WORK/in.log")"
	elif ! config_check "$WORK/in.yaml"; then
		bad "$label: inside ($inside) must pass sluice config check; it said: $(head -c 400 "$WORK/check.log")"
	else
		ok "$label: inside ($inside) renders and passes sluice config check"
	fi

	# Outside: the chart refuses it, naming the value...
	if "${TPL[@]}" "${set_out[@]}" >/dev/null 2>"$WORK/out.log"; then
		bad "$label: outside ($outside) must fail helm template, but it rendered"
	elif ! grep -Eq -- "$chartmsg" "$WORK/out.log"; then
		bad "$label: outside ($outside): helm template failed without naming /$chartmsg/: $(head -c 300 "$WORK/out.log")"
	else
		ok "$label: outside ($outside) fails helm template: $(grep -Eo -- ".{0,40}($chartmsg).{0,80}" "$WORK/out.log" | head -n 1)"
	fi
	# ...and the binary refuses the same values as the chart would render them without its checks.
	if ! "${TPL[@]}" --skip-schema-validation --set testOnlySkipChartChecks=true "${set_out[@]}" >"$WORK/out.yaml" 2>"$WORK/out.log"; then
		bad "$label: outside ($outside) must render with the chart's checks off: $(head -c 300 "$WORK/out.log")"
	elif config_check "$WORK/out.yaml"; then
		bad "$label: outside ($outside): sluice config check accepts what the chart refuses (the chart is stricter than the binary)"
	elif ! grep -Eiq -- "$binre" "$WORK/check.log" && ! grep -Fq -- "\"${outside##*=}\"" "$WORK/check.log"; then
		# It must say which setting or which value it refuses (naming the setting is app/'s own tests' job).
		bad "$label: outside ($outside): sluice config check failed naming neither /$binre/ nor \"${outside##*=}\": $(head -c 400 "$WORK/check.log")"
	else
		ok "$label: outside ($outside) is refused by sluice config check: $(grep -Eio -- ".{0,40}($binre).{0,60}" "$WORK/check.log" | head -n 1)"
	fi
done

echo "bounds: $passed passed, $failed failed, $skipped skipped"
[[ "$failed" == 0 ]]
