{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "kubeforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, plus the chart name unless the release name already
contains it. Truncated to 63 characters.
*/}}
{{- define "kubeforge.fullname" -}}
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

{{/*
Chart label value: name-version.
*/}}
{{- define "kubeforge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator pod. Never change them: Deployment selectors are immutable.
*/}}
{{- define "kubeforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Common labels on every object the chart renders.
*/}}
{{- define "kubeforge.labels" -}}
helm.sh/chart: {{ include "kubeforge.chart" . }}
{{ include "kubeforge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubeforge
{{- end }}

{{/*
Name of the ServiceAccount the operator runs as.
*/}}
{{- define "kubeforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubeforge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "kubeforge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Refuse settings that would let two replicas write at once or make the election unsafe; the
schema checks each value, these check them against each other (client-go's rules).
*/}}
{{- define "kubeforge.validateHA" -}}
{{- $le := .Values.leaderElection }}
{{- if and (gt (int .Values.replicaCount) 1) (not $le.enabled) }}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: without leader election every replica would reconcile and write the same objects. Enable leaderElection or set replicaCount to 1." (int .Values.replicaCount)) }}
{{- end }}
{{- if $le.enabled }}
{{- if le (float64 $le.leaseDurationSeconds) (float64 $le.renewDeadlineSeconds) }}
{{- fail (printf "leaderElection.leaseDurationSeconds (%v) must be greater than leaderElection.renewDeadlineSeconds (%v): a leader that cannot renew must stop before a standby takes over." $le.leaseDurationSeconds $le.renewDeadlineSeconds) }}
{{- end }}
{{- if le (float64 $le.renewDeadlineSeconds) (mulf 1.2 (float64 $le.retryPeriodSeconds)) }}
{{- fail (printf "leaderElection.renewDeadlineSeconds (%v) must be greater than 1.2 x leaderElection.retryPeriodSeconds (%v)." $le.renewDeadlineSeconds $le.retryPeriodSeconds) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether the operator watches every namespace: only when asked for explicitly with
`watchNamespaces: ["*"]`. "*" must then be the only entry.
*/}}
{{- define "kubeforge.allNamespaces" -}}
{{- if has "*" .Values.watchNamespaces }}
{{- if gt (len .Values.watchNamespaces) 1 }}
{{- fail "watchNamespaces: \"*\" (every namespace) must be the only entry" }}
{{- end }}
{{- "true" }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator watches, as a JSON list: the ones listed, or the release
namespace when none is. Empty when it watches every namespace.
*/}}
{{- define "kubeforge.watchedNamespaces" -}}
{{- if include "kubeforge.allNamespaces" . }}
{{- list | toJson }}
{{- else if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/*
The GPU catalog's YAML: `gpuCatalog` from the values when set (it replaces the catalog whole), else
the chart's files/gpu-catalog.yaml (generated from the operator's built-in default by `make crds`).
*/}}
{{- define "kubeforge.gpuCatalog" -}}
{{- if .Values.gpuCatalog -}}
{{- toYaml .Values.gpuCatalog -}}
{{- else -}}
{{- .Files.Get "files/gpu-catalog.yaml" -}}
{{- end -}}
{{- end }}
