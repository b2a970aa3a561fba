{{/* Chart name. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every object; each adds its own app.kubernetes.io/component. */}}
{{- define "sluice.baseLabels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sluice.labels" -}}
{{ include "sluice.baseLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "sluice.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice.postgresql.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: postgresql
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sluice.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Secret and key holding the tokens file. */}}
{{- define "sluice.tokens.secretName" -}}
{{- if .Values.tokens.existingSecret }}
{{- .Values.tokens.existingSecret }}
{{- else }}
{{- printf "%s-tokens" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "sluice.tokens.key" -}}
{{- if .Values.tokens.existingSecret }}{{ .Values.tokens.key }}{{ else }}tokens.yaml{{ end }}
{{- end }}

{{/* Secret and key holding SLUICE_DATABASE_URL. */}}
{{- define "sluice.database.secretName" -}}
{{- if eq .Values.postgres.mode "external" }}
{{- .Values.postgres.external.existingSecret }}
{{- else }}
{{- include "sluice.postgresql.fullname" . }}
{{- end }}
{{- end }}

{{- define "sluice.database.secretKey" -}}
{{- if eq .Values.postgres.mode "external" }}{{ .Values.postgres.external.urlKey }}{{ else }}url{{ end }}
{{- end }}

{{- define "sluice.bundledPostgres" -}}
{{- if and (eq .Values.store "postgres") (eq .Values.postgres.mode "bundled") }}true{{ end }}
{{- end }}

{{- define "sluice.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add .Values.preStopSleepSeconds .Values.drainTimeoutSeconds 5 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
sluice.durationNs: a duration in sluice's one grammar (domain.ParseDuration, openapi.yaml's Duration pattern):
whole numbers with units d, h, m, s, ms in that order, each at most once (500ms, 30s, 1h30m, 7d, 1d12h), as an
integer count of nanoseconds; "invalid" when it does not parse.
*/}}
{{- define "sluice.durationNs" -}}
{{- $s := toString . -}}
{{- $units := dict "ms" 1000000 "s" 1000000000 "m" 60000000000 "h" 3600000000000 "d" 86400000000000 -}}
{{- if or (eq $s "") (not (regexMatch "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$" $s)) -}}
invalid
{{- else -}}
{{- $total := int64 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d)" $s -1 -}}
{{- $unit := regexFind "(ms|s|m|h|d)$" . -}}
{{- /* Leading zeros are stripped: sprig's int64 would read "010" as octal. */ -}}
{{- $total = add $total (mul (int64 (regexReplaceAll "^0+" (trimSuffix $unit .) "" | default "0")) (int64 (get $units $unit))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}
{{- end }}

{{/*
sluice.checkDuration: fails unless a duration value parses and lies in [min, max] (min/max as durations, max
optional), naming the value's path and the valid range the binary enforces. dict "path" "value" "min" "max".
*/}}
{{- define "sluice.checkDuration" -}}
{{- $ns := include "sluice.durationNs" .value -}}
{{- if eq $ns "invalid" -}}
{{- fail (printf "%s: %q is not a duration: whole numbers with units d, h, m, s, ms in that order, each at most once, e.g. 500ms, 30s, 5m, 1h30m, 7d" .path (toString .value)) -}}
{{- end -}}
{{- $min := int64 (include "sluice.durationNs" .min) -}}
{{- if lt (int64 $ns) $min -}}
{{- fail (printf "%s: must be at least %s%s, got %s (sluice refuses it at start-up)" .path .min (ternary (printf " and at most %s" .max) "" (not (empty .max))) (toString .value)) -}}
{{- end -}}
{{- if .max -}}
{{- if gt (int64 $ns) (int64 (include "sluice.durationNs" .max)) -}}
{{- fail (printf "%s: must be between %s and %s, got %s (sluice refuses it at start-up)" .path .min .max (toString .value)) -}}
{{- end -}}
{{- end -}}
{{- if and .wholeMs (ne (mod (int64 $ns) 1000000) (int64 0)) -}}
{{- fail (printf "%s: must be a whole number of milliseconds, got %s" .path (toString .value)) -}}
{{- end -}}
{{- end }}

{{/*
sluice.memoryBytes: a Kubernetes memory quantity (512Mi, 1Gi, 500M, 536870912) as an integer number of bytes;
empty when the quantity is not set or not understood.
*/}}
{{- define "sluice.memoryBytes" -}}
{{- $q := toString . -}}
{{- $m := regexFindAll "^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q -1 -}}
{{- if $m -}}
{{- $suffix := regexFind "(Ki|Mi|Gi|Ti|k|M|G|T)$" $q -}}
{{- $mult := get (dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000) $suffix -}}
{{- mul (int64 (trimSuffix $suffix $q)) (int64 $mult) -}}
{{- end -}}
{{- end }}

{{/*
sluice.memoryMaxKeys: memory.maxKeys when set; otherwise derived from the container's memory limit:
  floor(resources.limits.memory × memory.keyMemoryPercent / 100 / memory.bytesPerKey)
so the worst case (every key full) fits in the share of the limit given to keys, and the rest is left to the Go
runtime, the garbage collector's headroom and in-flight requests. docs/operator.md explains the figures.
*/}}
{{- define "sluice.memoryMaxKeys" -}}
{{- if not (kindIs "invalid" .Values.memory.maxKeys) -}}
{{- int64 .Values.memory.maxKeys -}}
{{- else -}}
{{- $limit := include "sluice.memoryBytes" (dig "limits" "memory" "" .Values.resources) -}}
{{- if not $limit -}}
{{- fail (printf "memory.maxKeys is derived from resources.limits.memory, which is %q: set a memory limit such as 512Mi (or an integer quantity with Ki, Mi, Gi, k, M, G), or set memory.maxKeys" (toString (dig "limits" "memory" "" .Values.resources))) -}}
{{- end -}}
{{- $keys := div (div (mul (int64 $limit) (int64 .Values.memory.keyMemoryPercent)) 100) (int64 .Values.memory.bytesPerKey) -}}
{{- if lt $keys (int64 1) -}}
{{- fail (printf "memory.maxKeys derived from resources.limits.memory=%s x %d%% / memory.bytesPerKey=%d is 0: raise the limit or set memory.maxKeys" (toString .Values.resources.limits.memory) (int64 .Values.memory.keyMemoryPercent) (int64 .Values.memory.bytesPerKey)) -}}
{{- end -}}
{{- $keys -}}
{{- end -}}
{{- end }}

{{/* sluice.replicasMin: the fewest pods the Deployment runs (the autoscaler's floor when it is on). */}}
{{- define "sluice.replicasMin" -}}
{{- if .Values.autoscaling.enabled }}{{ int64 .Values.autoscaling.minReplicas }}{{ else }}{{ int64 .Values.replicas }}{{ end -}}
{{- end }}

{{/*
Cross-field checks and ranges the JSON schema cannot express (durations, unique names). testOnlySkipChartChecks
turns them off for scripts/chart-bounds.sh alone, which renders out-of-range values anyway to show that the binary
refuses them too; it is not in values.schema.json, so only a render with --skip-schema-validation can set it.
*/}}
{{- define "sluice.validate" -}}
{{- if not (index .Values "testOnlySkipChartChecks") }}
{{- if and (eq .Values.store "postgres") (eq .Values.postgres.mode "external") (not .Values.postgres.external.existingSecret) }}
{{- fail "postgres.mode=external needs postgres.external.existingSecret: the name of a Secret holding the database URL under postgres.external.urlKey" }}
{{- end }}
{{- if and (eq .Values.migrations.mode "hook") (ne .Values.store "postgres") }}
{{- fail "migrations.mode=hook needs store=postgres: the memory store has no schema to migrate" }}
{{- end }}
{{- if and (eq .Values.migrations.mode "hook") (eq .Values.postgres.mode "bundled") }}
{{- fail "migrations.mode=hook needs postgres.mode=external: the bundled database does not exist yet when pre-install hooks run. Keep migrations.mode=startup with the bundled database" }}
{{- end }}
{{- if gt (int64 .Values.postgres.lanes) (int64 .Values.postgres.maxConns) }}
{{- fail (printf "postgres.lanes (%d) must be at most postgres.maxConns (%d): each lane keeps a pooled connection busy; 0 picks min(4, maxConns)" (int64 .Values.postgres.lanes) (int64 .Values.postgres.maxConns)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (eq (include "sluice.storeShared" .) "false") }}
{{- fail (printf "autoscaling.enabled needs store=postgres or store=redis (a shared store): store=%s replicas each keep their own counters" .Values.store) }}
{{- end }}
{{- if and (eq .Values.store "redis") (not .Values.redis.addrs) }}
{{- fail "store=redis needs redis.addrs: host:port seeds of your Redis, Redis Cluster or Sentinels" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- /* Durations: the binary's ranges (app/load.go validate; domain.Policy.Validate for windows). */}}
{{- include "sluice.checkDuration" (dict "path" "janitorInterval" "value" .Values.janitorInterval "min" "1m") }}
{{- include "sluice.checkDuration" (dict "path" "postgres.statementTimeout" "value" .Values.postgres.statementTimeout "min" "1ms" "max" "1m") }}
{{- include "sluice.checkDuration" (dict "path" "http.readHeaderTimeout" "value" .Values.http.readHeaderTimeout "min" "1ms" "max" "10m") }}
{{- include "sluice.checkDuration" (dict "path" "http.readTimeout" "value" .Values.http.readTimeout "min" "1ms" "max" "10m") }}
{{- include "sluice.checkDuration" (dict "path" "http.idleTimeout" "value" .Values.http.idleTimeout "min" "1ms" "max" "10m") }}
{{- /* The Redis store's durations, when the chart has Redis values (store: redis). */}}
{{- with (index .Values "redis") }}
{{- if hasKey . "timeout" }}
{{- include "sluice.checkDuration" (dict "path" "redis.timeout" "value" .timeout "min" "1ms" "max" "1m") }}
{{- end }}
{{- if hasKey . "waitTimeout" }}
{{- include "sluice.checkDuration" (dict "path" "redis.waitTimeout" "value" .waitTimeout "min" "1ms" "max" "10s") }}
{{- end }}
{{- end }}
{{- /* The Envoy RLS front end's reload interval, when the chart has RLS values: 0 (never) or at least 1s. */}}
{{- with (index .Values "rls") }}
{{- if and .enabled (hasKey . "reloadInterval") }}
{{- $ns := include "sluice.durationNs" .reloadInterval }}
{{- if ne $ns "0" }}
{{- include "sluice.checkDuration" (dict "path" "rls.reloadInterval" "value" .reloadInterval "min" "1s") }}
{{- end }}
{{- end }}
{{- end }}
{{- $names := dict }}
{{- range $i, $p := .Values.policies }}
{{- $at := printf "policies[%d]" $i }}
{{- if $p.period }}
{{- if ne ($p.algorithm | default "fixed_window") "fixed_window" }}
{{- fail (printf "%s.period: a calendar period applies to fixed_window only, not to %s" $at $p.algorithm) }}
{{- end }}
{{- if ne (toString $.Values.store) "memory" }}
{{- fail (printf "%s.period: calendar periods are not decided by the %s store yet (the memory store decides them)" $at $.Values.store) }}
{{- end }}
{{- else }}
{{- include "sluice.checkDuration" (dict "path" (printf "%s.window" $at) "value" $p.window "min" "1s" "max" "31d" "wholeMs" true) }}
{{- end }}
{{- if hasKey $names $p.name }}
{{- fail (printf "%s.name: duplicate policy name %q (also policies[%d]); each policy needs its own name" $at $p.name (get $names $p.name)) }}
{{- end }}
{{- $_ := set $names $p.name $i }}
{{- $algorithm := $p.algorithm | default "sliding_log" }}
{{- /* resolution 0 (0s, 0ms) means the default, window/60, as in sluice; any algorithm accepts it. */}}
{{- if and (not (kindIs "invalid" $p.resolution)) (ne (include "sluice.durationNs" $p.resolution) "0") }}
{{- if ne $algorithm "sliding_window" }}
{{- fail (printf "%s.resolution: applies to algorithm sliding_window only, not to %s" $at $algorithm) }}
{{- end }}
{{- include "sluice.checkDuration" (dict "path" (printf "%s.resolution" $at) "value" $p.resolution "min" "1ms" "max" (toString $p.window) "wholeMs" true) }}
{{- end }}
{{- end }}
{{- $tokenNames := dict }}
{{- if not .Values.tokens.existingSecret }}
{{- range $i, $t := .Values.tokens.generate }}
{{- if hasKey $tokenNames $t.name }}
{{- fail (printf "tokens.generate[%d].name: duplicate token name %q: each generated token needs its own name (it is the Secret key token-<name>)" $i $t.name) }}
{{- end }}
{{- $_ := set $tokenNames $t.name true }}
{{- end }}
{{- end }}
{{- /* Shutdown: the kubelet kills the pod terminationGracePeriodSeconds after it starts terminating, preStop included. */}}
{{- $grace := int64 (include "sluice.terminationGracePeriodSeconds" .) }}
{{- if and (gt (int64 .Values.preStopSleepSeconds) 0) (ge (int64 .Values.preStopSleepSeconds) $grace) }}
{{- fail (printf "preStopSleepSeconds (%d) must be less than terminationGracePeriodSeconds (%d): the kubelet kills the pod when the grace period ends, so sluice would never get SIGTERM and drain. Leave terminationGracePeriodSeconds null (it becomes preStopSleepSeconds + drainTimeoutSeconds + 5)" (int64 .Values.preStopSleepSeconds) $grace) }}
{{- end }}
{{- /* A PodDisruptionBudget that allows no eviction blocks every node drain (kubectl drain waits forever). */}}
{{- if .Values.podDisruptionBudget.enabled }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- $pods := int64 (include "sluice.replicasMin" .) }}
{{- $blocks := false }}
{{- if not (kindIs "invalid" $pdb.minAvailable) }}
{{- $min := toString $pdb.minAvailable }}
{{- if hasSuffix "%" $min }}
{{- $blocks = eq (trimSuffix "%" $min) "100" }}
{{- else }}
{{- $blocks = ge (int64 $min) $pods }}
{{- end }}
{{- else }}
{{- $max := toString $pdb.maxUnavailable }}
{{- $blocks = or (eq $max "0") (eq $max "0%") }}
{{- end }}
{{- if $blocks }}
{{- fail (printf "podDisruptionBudget (minAvailable=%v, maxUnavailable=%v) allows no pod of %d to be evicted, so it blocks every node drain: use maxUnavailable: 1, or a minAvailable below the replica count (%d)" $pdb.minAvailable $pdb.maxUnavailable $pods $pods) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
