{{/*
Names the binaries expect by default (certs::CertConfig); fixed, so one release per cluster.
*/}}
{{- define "db-operator.name" -}}db-operator{{- end -}}
{{- define "db-operator.serviceName" -}}db-operator-webhook{{- end -}}
{{- define "db-operator.secretName" -}}db-operator-webhook-tls{{- end -}}
{{- define "db-operator.validatingName" -}}db-operator-validating{{- end -}}
{{- define "db-operator.mutatingName" -}}db-operator-mutating{{- end -}}
{{- define "db-operator.crdName" -}}databases.example.com{{- end -}}
{{- define "db-operator.certificateName" -}}db-operator-webhook{{- end -}}

{{- /* Pod selector of one component: include "db-operator.selectorLabels" "admission" */ -}}
{{- define "db-operator.selectorLabels" -}}
app.kubernetes.io/name: db-operator
app.kubernetes.io/component: {{ . }}
{{- end -}}

{{- define "db-operator.serviceAccountName" -}}db-operator-{{ . }}{{- end -}}

{{- define "db-operator.labels" -}}
app.kubernetes.io/name: db-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "db-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

