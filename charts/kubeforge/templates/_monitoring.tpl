{{/*
The job label of the operator's series: monitoring.job, else the chart name, which the chart's
ServiceMonitor (jobLabel: app.kubernetes.io/name) gives them.
*/}}
{{- define "kubeforge.monitoringJob" -}}
{{- default (include "kubeforge.name" .) .Values.monitoring.job }}
{{- end }}

{{/*
A file of files/ with its job="kubeforge" selectors (written `job=\"kubeforge\"` inside JSON strings)
pointed at the operator's job. The files stay plain Prometheus rules and Grafana JSON.
Called with (list $ "files/...").
*/}}
{{- define "kubeforge.monitoringFile" -}}
{{- $root := index . 0 }}
{{- $job := include "kubeforge.monitoringJob" $root }}
{{- $root.Files.Get (index . 1) | replace "job=\"kubeforge\"" (printf "job=\"%s\"" $job) | replace "job=\\\"kubeforge\\\"" (printf "job=\\\"%s\\\"" $job) }}
{{- end }}
