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

{{/* Cross-field checks the JSON schema cannot express clearly. */}}
{{- define "sluice.validate" -}}
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
{{- if and .Values.autoscaling.enabled (eq .Values.store "memory") }}
{{- fail "autoscaling.enabled needs store=postgres or store=redis: memory-store replicas each keep their own counters" }}
{{- end }}
{{- if and (eq .Values.store "redis") (not .Values.redis.addrs) }}
{{- fail "store=redis needs redis.addrs: host:port seeds of your Redis, Redis Cluster or Sentinels" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- end }}
