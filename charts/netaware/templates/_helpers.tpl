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

{{/* The Secret with tls.crt, tls.key and ca.crt of the gRPC ports. */}}
{{- define "netaware.tlsSecret" -}}
{{- if eq .Values.security.tls.source "secret" -}}
{{- required "security.tls.existingSecret is required with security.tls.source=secret" .Values.security.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" (include "netaware.aggregatorName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The names the aggregator's certificate must carry: its Service in
every form, and localhost for kubectl port-forward. */}}
{{- define "netaware.tlsNames" -}}
{{- $svc := include "netaware.aggregatorName" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.security.tls.clusterDomain) "localhost" | toJson -}}
{{- end -}}

{{/* Refuse values that would put tokens on the wire in clear text. */}}
{{- define "netaware.checkSecurity" -}}
{{- if and (not .Values.security.tls.enabled) (or (eq .Values.security.agentAuth "token") (eq .Values.security.queryAuth "token")) -}}
{{- fail "security.tls.enabled=false would send tokens in clear text: keep TLS on, or (labs only) also set security.agentAuth=none and security.queryAuth=none" -}}
{{- end -}}
{{- end -}}
