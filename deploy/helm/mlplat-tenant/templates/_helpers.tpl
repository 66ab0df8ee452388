{{- define "mlplat-tenant.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlplat
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
mlplat/tenant: {{ .Values.tenant | quote }}
mlplat/code-location: {{ .Values.codeLocation | quote }}
{{- end -}}
