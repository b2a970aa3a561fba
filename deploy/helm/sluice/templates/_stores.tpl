{{/*
sluice.storeCapabilities: what each store can do, as app/stores.go's driver rows say (Shared: replicas sharing the
store together enforce each limit; AtomicAcrossKeys: an atomic multi-check is one atomic step whatever its keys).
The binary logs the same two facts at start-up; app's TestChartStoreCapabilities holds this table to the rows.
*/}}
{{- define "sluice.storeCapabilities" -}}
memory: {shared: false, atomicAcrossKeys: true}
postgres: {shared: true, atomicAcrossKeys: true}
redis: {shared: true, atomicAcrossKeys: false}
{{- end }}

{{/* sluice.storeShared: "true" when replicas of .Values.store share one count (the table above), else "false". */}}
{{- define "sluice.storeShared" -}}
{{- $caps := include "sluice.storeCapabilities" . | fromYaml -}}
{{- if (index $caps .Values.store).shared }}true{{ else }}false{{ end -}}
{{- end }}
