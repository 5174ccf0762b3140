{{/* Name of the release's objects, at most 63 characters. */}}
{{- define "netaware.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "netaware.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component ("agent" or "aggregator"). */}}
{{- define "netaware.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "netaware.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .name (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "netaware.aggregatorName" -}}
{{- printf "%s-aggregator" (include "netaware.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Lease the aggregator replicas compete for. */}}
{{- define "netaware.leaseName" -}}
{{- .Values.aggregator.leaderElection.leaseName | default (include "netaware.aggregatorName" .) -}}
{{- end -}}

{{/* The agents' ServiceAccount: only its tokens may speak for a node. */}}
{{- define "netaware.agentName" -}}
{{- printf "%s-agent" (include "netaware.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
