{{/* Names: <release>-pipeswarm (or the release name when it already contains the chart's). */}}
{{- define "pipeswarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pipeswarm.fullname" -}}
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

{{/* The name of one part: (list $ "master") -> <fullname>-master */}}
{{- define "pipeswarm.part" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "pipeswarm.fullname" $root | trunc 52 | trimSuffix "-") (index . 1) }}
{{- end }}

{{- define "pipeswarm.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "pipeswarm.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "pipeswarm.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{ include "pipeswarm.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- end }}

{{- define "pipeswarm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Whether the chart deploys a pipeline part: (list $ "kafka") */}}
{{- define "pipeswarm.deploys" -}}
{{- $root := index . 0 -}}
{{- if and $root.Values.pipeline.enabled (index $root.Values.pipeline (index . 1)).enabled }}true{{ end }}
{{- end }}

{{/* The backend addresses: targets.*, else the in-cluster part, else empty (pipeswarm's default). */}}
{{- define "pipeswarm.mqttUrl" -}}
{{- if .Values.targets.mqttUrl }}{{ .Values.targets.mqttUrl }}
{{- else if include "pipeswarm.deploys" (list . "mosquitto") }}mqtt://{{ include "pipeswarm.part" (list . "mosquitto") }}:1883
{{- end }}
{{- end }}

{{- define "pipeswarm.kafkaBootstrap" -}}
{{- if .Values.targets.kafkaBootstrap }}{{ .Values.targets.kafkaBootstrap }}
{{- else if include "pipeswarm.deploys" (list . "kafka") }}{{ include "pipeswarm.part" (list . "kafka") }}:9092
{{- end }}
{{- end }}

{{- define "pipeswarm.redisUrl" -}}
{{- if .Values.targets.redisUrl }}{{ .Values.targets.redisUrl }}
{{- else if include "pipeswarm.deploys" (list . "redis") }}redis://{{ include "pipeswarm.part" (list . "redis") }}:6379/0
{{- end }}
{{- end }}

{{- define "pipeswarm.gatewayUrl" -}}
{{- if .Values.targets.gatewayUrl }}{{ .Values.targets.gatewayUrl }}
{{- else if include "pipeswarm.deploys" (list . "gateway") }}http://{{ include "pipeswarm.part" (list . "gateway") }}:{{ .Values.pipeline.gateway.port }}
{{- end }}
{{- end }}

{{/* One locust.conf value: whole numbers stay whole (YAML numbers arrive as float64). */}}
{{- define "pipeswarm.confValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}{{ int64 . }}
{{- else if kindIs "slice" . }}[{{ join ", " . }}]
{{- else }}{{ . }}
{{- end }}
{{- end }}

{{/* Container securityContext: (list $ runAsUser readOnlyRootFilesystem) */}}
{{- define "pipeswarm.containerSecurity" -}}
{{- $root := index . 0 -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ index . 2 }}
runAsNonRoot: true
runAsUser: {{ index . 1 }}
capabilities:
  drop: [ALL]
{{- end }}

{{/* What every pod of this chart shares. */}}
{{- define "pipeswarm.podCommon" -}}
# no <SERVICE>_PORT=tcp://... variables: Kafka's image would read KAFKA_* ones as settings
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The master's and workers' shared locust arguments: the config file and the scenario. */}}
{{- define "pipeswarm.locustArgs" -}}
- --config=/etc/pipeswarm/locust.conf
{{- if .Values.locustfileContent }}
- --locustfile=/etc/pipeswarm/locustfile.py
{{- else }}
- --locustfile={{ .Values.locustfile }}
{{- end }}
{{- end }}

{{- define "pipeswarm.locustEnv" -}}
# the image's users/ and telemetry/ for a locustfile mounted outside /app
- {name: PYTHONPATH, value: /app}
- {name: PYTHONDONTWRITEBYTECODE, value: "1"}
- {name: HOME, value: /tmp}
{{- end }}

{{- define "pipeswarm.locustMounts" -}}
- {name: config, mountPath: /etc/pipeswarm, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- end }}

{{- define "pipeswarm.locustVolumes" -}}
- name: config
  configMap:
    name: {{ include "pipeswarm.fullname" . }}
- name: tmp
  emptyDir: {}
{{- end }}
