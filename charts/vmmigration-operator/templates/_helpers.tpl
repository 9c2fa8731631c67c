{{/* The release's full name, used for every namespaced and cluster object. */}}
{{- define "vmmigration.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "vmmigration" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-vmmigration" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vmmigration.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vmmigration.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The scrape job is named after app.kubernetes.io/name, which the alert rules expect. */}}
{{- define "vmmigration.selectorLabels" -}}
app.kubernetes.io/name: vmmigration-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vmmigration.labels" -}}
{{ include "vmmigration.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The uninstall hook's objects; a Job's name must stay a 63-character label. */}}
{{- define "vmmigration.uninstallName" -}}
{{- printf "%s-uninstall" (include "vmmigration.fullname" . | trunc 53 | trimSuffix "-") -}}
{{- end -}}
