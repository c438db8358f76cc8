{{/* Names and labels shared by every object. */}}
{{- define "mouthmap.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mouthmap.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mouthmap.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mouthmap.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "mouthmap.fullname" .)) -}}
{{- end -}}

{{- define "mouthmap.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}

{{/* Environment every MouthMap container gets. */}}
{{- define "mouthmap.env" -}}
- name: MOUTHMAP_BROKERS
  value: {{ .Values.kafka.brokers | quote }}
- name: MOUTHMAP_CONFIG
  value: /etc/mouthmap/mouthmap.toml
- name: MOUTHMAP_FRAMES_TOPIC
  value: frames
{{- $options := .Values.kafka.options }}
{{- if .Values.kafka.sasl.enabled }}
- name: MOUTHMAP_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "mouthmap.secretName" . }}
      key: kafka-sasl-password
- name: MOUTHMAP_KAFKA_OPTIONS
  value: {{ (concat $options (list "security.protocol=SASL_SSL" (printf "sasl.mechanism=%s" .Values.kafka.sasl.mechanism) (printf "sasl.username=%s" .Values.kafka.sasl.username) "sasl.password=$(MOUTHMAP_KAFKA_SASL_PASSWORD)")) | join "," | quote }}
{{- else if $options }}
- name: MOUTHMAP_KAFKA_OPTIONS
  value: {{ $options | join "," | quote }}
{{- end }}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: MOUTHMAP_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}
