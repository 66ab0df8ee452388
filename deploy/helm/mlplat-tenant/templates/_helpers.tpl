{{- define "mlplat-tenant.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlplat
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
mlplat/tenant: {{ .Values.tenant | quote }}
mlplat/code-location: {{ .Values.codeLocation | quote }}
{{- end -}}

{{/* Every pod but a team's trainer pods (selected by the label the platform gives them). */}}
{{- define "mlplat-tenant.notTrainerExpressions" -}}
matchExpressions:
  {{- range $key, $value := .Values.trainer.roleLabel }}
  - {key: {{ $key | quote }}, operator: NotIn, values: [{{ $value | quote }}]}
  {{- end }}
{{- end -}}

{{- define "mlplat-tenant.notTrainer" -}}
{{- if .Values.trainer.roleLabel -}}
{{ include "mlplat-tenant.notTrainerExpressions" . }}
{{- else -}}
{}
{{- end -}}
{{- end -}}
