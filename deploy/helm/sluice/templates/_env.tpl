{{/*
The sluice container's environment. Mirrors config.yaml (the env wins over the file) so that `kubectl describe`
shows the settings that matter per deployment, and carries the secrets the file never holds.
*/}}
{{- define "sluice.env" -}}
- name: SLUICE_CONFIG
  value: /etc/sluice/config.yaml
- name: SLUICE_LISTEN
  value: "0.0.0.0:8080"
- name: SLUICE_STORE
  value: {{ .Values.store | quote }}
- name: SLUICE_TOKENS_FILE
  value: /etc/sluice/tokens/tokens.yaml
- name: SLUICE_LOG_LEVEL
  value: {{ .Values.log.level | quote }}
- name: SLUICE_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: SLUICE_DRAIN_TIMEOUT
  value: {{ printf "%ds" (int64 .Values.drainTimeoutSeconds) | quote }}
{{- $extra := list }}
{{- range .Values.extraEnv }}{{ $extra = append $extra .name }}{{ end }}
{{- $memLimit := include "sluice.memoryBytes" (dig "limits" "memory" "" .Values.resources) }}
{{- if and $memLimit (not (has "GOMEMLIMIT" $extra)) }}
{{- /* The garbage collector works harder as the heap nears 90% of the limit instead of letting it reach the OOM killer. */}}
- name: GOMEMLIMIT
  value: {{ div (mul (int64 $memLimit) 9) 10 | quote }}
{{- end }}
{{- if eq .Values.store "memory" }}
- name: SLUICE_MEMORY_MAX_KEYS
  value: {{ include "sluice.memoryMaxKeys" . | quote }}
{{- else if eq .Values.store "redis" }}
- name: SLUICE_REDIS_ADDRS
  value: {{ join "," .Values.redis.addrs | quote }}
{{- with .Values.redis.username }}
- name: SLUICE_REDIS_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: SLUICE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.passwordKey }}
{{- end }}
- name: SLUICE_REDIS_TLS
  value: {{ .Values.redis.tls | quote }}
- name: SLUICE_REDIS_TIMEOUT
  value: {{ .Values.redis.timeout | quote }}
- name: SLUICE_REDIS_WAIT_REPLICAS
  value: {{ int64 .Values.redis.waitReplicas | quote }}
- name: SLUICE_REDIS_WAIT_TIMEOUT
  value: {{ .Values.redis.waitTimeout | quote }}
- name: SLUICE_REDIS_LANES
  value: {{ int64 .Values.redis.lanes | quote }}
{{- with .Values.redis.prefix }}
- name: SLUICE_REDIS_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- else }}
{{- if and (include "sluice.bundledPostgres" .) .Values.postgres.bundled.existingSecret }}
{{- $pg := .Values.postgres.bundled }}
{{- /* The password stays in the operator's Secret: pgx reads PGPASSWORD when the URL has none. */}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $pg.existingSecret }}
      key: {{ $pg.passwordKey }}
- name: SLUICE_DATABASE_URL
  value: {{ printf "postgres://%s@%s.%s.svc:5432/%s?sslmode=disable" (urlquery $pg.username | replace "+" "%20") (include "sluice.postgresql.fullname" .) .Release.Namespace (urlquery $pg.database | replace "+" "%20") | quote }}
{{- else }}
- name: SLUICE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "sluice.database.secretName" . }}
      key: {{ include "sluice.database.secretKey" . }}
{{- end }}
- name: SLUICE_JANITOR_INTERVAL
  value: {{ .Values.janitorInterval | quote }}
- name: SLUICE_MIGRATE_ON_START
  value: {{ eq .Values.migrations.mode "startup" | quote }}
- name: SLUICE_POSTGRES_MAX_CONNS
  value: {{ int64 .Values.postgres.maxConns | quote }}
- name: SLUICE_POSTGRES_LANES
  value: {{ int64 .Values.postgres.lanes | quote }}
- name: SLUICE_POSTGRES_STATEMENT_TIMEOUT
  value: {{ .Values.postgres.statementTimeout | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
