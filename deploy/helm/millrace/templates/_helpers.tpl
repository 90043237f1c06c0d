{{/* Names: every object is "<release>-millrace-<component>" (or fullnameOverride-<component>). */}}
{{- define "millrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "millrace.fullname" -}}
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

{{/* A component's name: (dict "root" $ "component" "predictor" ["model" "m"]). */}}
{{- define "millrace.componentName" -}}
{{- $base := printf "%s-%s" (include "millrace.fullname" .root) .component }}
{{- if .model }}{{ $base = printf "%s-%s" $base .model }}{{ end }}
{{- $base | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "millrace.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of a component: (dict "root" $ "component" "featurizer" ["model" "m"]). */}}
{{- define "millrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "millrace.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .model }}
millrace.io/model: {{ .model }}
{{- end }}
{{- end }}

{{- define "millrace.labels" -}}
{{ include "millrace.selectorLabels" . }}
helm.sh/chart: {{ include "millrace.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: millrace
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of objects that belong to no one component (Secrets, ConfigMaps). */}}
{{- define "millrace.commonLabels" -}}
{{ include "millrace.labels" (dict "root" . "component" "pipeline") }}
{{- end }}

{{- define "millrace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "millrace.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "millrace.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Secrets: the chart's own unless the user names theirs. */}}
{{- define "millrace.authSecretName" -}}
{{- default (printf "%s-auth" (include "millrace.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "millrace.signingSecretName" -}}
{{- default (printf "%s-signing-key" (include "millrace.fullname" .)) .Values.trainer.signingKey.existingSecret }}
{{- end }}

{{- define "millrace.registryDatabaseSecretName" -}}
{{- default (printf "%s-registry-database" (include "millrace.fullname" .)) .Values.registry.database.existingSecret }}
{{- end }}

{{- define "millrace.redisSecretName" -}}
{{- default (printf "%s-redis" (include "millrace.fullname" .)) .Values.redis.existingSecret }}
{{- end }}

{{- define "millrace.strimziUserName" -}}
{{- printf "%s" (include "millrace.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The SASL credentials' Secret: the user's, Strimzi's for its KafkaUser, or the chart's. */}}
{{- define "millrace.kafkaSaslSecretName" -}}
{{- if .Values.kafka.sasl.existingSecret }}
{{- .Values.kafka.sasl.existingSecret }}
{{- else if include "millrace.strimziScram" . }}
{{- include "millrace.strimziUserName" . }}
{{- else }}
{{- printf "%s-kafka" (include "millrace.fullname" .) }}
{{- end }}
{{- end }}

{{- define "millrace.strimziScram" -}}
{{- $s := .Values.kafka.strimzi }}
{{- if and $s.enabled $s.user.enabled (eq $s.user.authentication "scram-sha-512") }}true{{ end }}
{{- end }}

{{- define "millrace.kafkaSaslMechanism" -}}
{{- if .Values.kafka.sasl.mechanism }}{{ .Values.kafka.sasl.mechanism }}
{{- else if include "millrace.strimziScram" . }}SCRAM-SHA-512
{{- end }}
{{- end }}

{{- define "millrace.usesRegistryDatabase" -}}
{{- if or .Values.registry.database.url .Values.registry.database.existingSecret }}true{{ end }}
{{- end }}

{{- define "millrace.registryUrl" -}}
{{- printf "http://%s:%d" (include "millrace.componentName" (dict "root" . "component" "registry")) (int .Values.registry.service.port) }}
{{- end }}

{{/* The settings file every process reads (MILLRACE_CONFIG). */}}
{{- define "millrace.settingsFile" -}}
topic_prefix = {{ .Values.pipeline.topicPrefix | toJson }}
feature_module = {{ .Values.pipeline.featureModule | toJson }}
log_level = {{ .Values.pipeline.logLevel | toJson }}
replication_factor = {{ .Values.kafka.topics.replicationFactor }}
min_insync = {{ .Values.kafka.topics.minInsyncReplicas }}
{{- range $key, $value := .Values.pipeline.settings }}
{{ $key }} = {{ $value | toJson }}
{{- end }}
{{- end }}

{{/* The environment every Millrace process shares: where Kafka, Redis and the registry are,
and the credentials, each from a Secret key. */}}
{{- define "millrace.commonEnv" -}}
{{- $v := .Values }}
- name: MILLRACE_CONFIG
  value: /etc/millrace/millrace.toml
- name: MILLRACE_HOST
  value: "0.0.0.0"
- name: HOME
  value: /tmp
- name: MILLRACE_KAFKA_BOOTSTRAP
  value: {{ $v.kafka.bootstrapServers | quote }}
{{- with $v.kafka.securityProtocol }}
- name: MILLRACE_KAFKA_SECURITY_PROTOCOL
  value: {{ . | quote }}
{{- end }}
{{- with include "millrace.kafkaSaslMechanism" . }}
- name: MILLRACE_KAFKA_SASL_MECHANISM
  value: {{ . | quote }}
{{- if include "millrace.strimziScram" $ | and (not $v.kafka.sasl.existingSecret) }}
- name: MILLRACE_KAFKA_SASL_USERNAME
  value: {{ include "millrace.strimziUserName" $ | quote }}
- name: MILLRACE_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "millrace.kafkaSaslSecretName" $ }}, key: password}
{{- else }}
- name: MILLRACE_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ include "millrace.kafkaSaslSecretName" $ }}, key: {{ $v.kafka.sasl.usernameKey }}}
- name: MILLRACE_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "millrace.kafkaSaslSecretName" $ }}, key: {{ $v.kafka.sasl.passwordKey }}}
{{- end }}
{{- end }}
{{- with $v.kafka.tls.existingSecret }}
- name: MILLRACE_KAFKA_SSL_CA_LOCATION
  value: /etc/millrace/kafka-tls/{{ $v.kafka.tls.caKey }}
{{- if $v.kafka.tls.certificateKey }}
- name: MILLRACE_KAFKA_SSL_CERTIFICATE_LOCATION
  value: /etc/millrace/kafka-tls/{{ $v.kafka.tls.certificateKey }}
{{- end }}
{{- if $v.kafka.tls.keyKey }}
- name: MILLRACE_KAFKA_SSL_KEY_LOCATION
  value: /etc/millrace/kafka-tls/{{ $v.kafka.tls.keyKey }}
{{- end }}
{{- if $v.kafka.tls.keyPasswordKey }}
- name: MILLRACE_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $v.kafka.tls.keyPasswordKey }}}
{{- end }}
{{- end }}
{{- if $v.redis.sentinels }}
- name: MILLRACE_REDIS_SENTINELS
  value: {{ join "," $v.redis.sentinels | quote }}
- name: MILLRACE_REDIS_MASTER_NAME
  value: {{ $v.redis.masterName | quote }}
{{- else if $v.redis.clusterNodes }}
- name: MILLRACE_REDIS_CLUSTER_NODES
  value: {{ join "," $v.redis.clusterNodes | quote }}
{{- end }}
{{- $redisSecret := include "millrace.redisSecretName" . }}
{{- if or $v.redis.sentinels $v.redis.clusterNodes }}
{{- if or $v.redis.password (and $v.redis.existingSecret $v.redis.passwordKey) }}
- name: MILLRACE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $redisSecret }}, key: {{ $v.redis.passwordKey | default "redis-password" }}}
{{- end }}
{{- if or $v.redis.sentinelPassword (and $v.redis.existingSecret $v.redis.sentinelPasswordKey) }}
- name: MILLRACE_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $redisSecret }}, key: {{ $v.redis.sentinelPasswordKey | default "redis-sentinel-password" }}}
{{- end }}
{{- else if or $v.redis.url $v.redis.existingSecret }}
- name: MILLRACE_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ $redisSecret }}, key: {{ $v.redis.urlKey }}}
{{- end }}
- name: MILLRACE_REGISTRY_URL
  value: {{ include "millrace.registryUrl" . | quote }}
- name: MILLRACE_REGISTRY_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "millrace.authSecretName" . }}, key: {{ $v.auth.secretKeys.registryToken }}}
- name: MILLRACE_REGISTRY_READ_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "millrace.authSecretName" . }}, key: {{ $v.auth.secretKeys.registryReadToken }}, optional: true}
- name: MILLRACE_VERIFY_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "millrace.authSecretName" . }}, key: {{ $v.auth.secretKeys.verifyKey }}}
{{- end }}

{{/* A service's own MILLRACE_* settings: (dict "settings" map). */}}
{{- define "millrace.settingsEnv" -}}
{{- range $name, $value := .settings }}
- name: MILLRACE_{{ $name | upper }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Volumes every Millrace pod has: the settings file, /tmp, Kafka's TLS files. */}}
{{- define "millrace.commonVolumes" -}}
- name: settings
  configMap:
    name: {{ include "millrace.fullname" . }}-settings
- name: tmp
  emptyDir: {}
{{- with .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "millrace.commonVolumeMounts" -}}
- name: settings
  mountPath: /etc/millrace
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/millrace/kafka-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Roll the pods when what they read changes: the settings file, and the values the chart's
Secrets are made of (or the names of the user's: a changed Secret of theirs rolls nothing). */}}
{{- define "millrace.checksums" -}}
{{- $v := .Values }}
{{- $secrets := list $v.auth $v.trainer.signingKey $v.redis $v.kafka.sasl $v.kafka.tls $v.registry.database }}
checksum/settings: {{ include "millrace.settingsFile" . | sha256sum }}
checksum/secrets: {{ toJson $secrets | sha256sum }}
{{- end }}

{{/* An HTTP probe on the service's port: (dict "path" "/health" "period" 10 "failures" 3). */}}
{{- define "millrace.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: http
periodSeconds: {{ .period | default 10 }}
timeoutSeconds: {{ .timeout | default 5 }}
failureThreshold: {{ .failures | default 3 }}
{{- end }}

{{/* The pod-level fields every workload takes from its section: (dict "root" $ "section" .Values.x). */}}
{{- define "millrace.podPlacement" -}}
{{- $s := .section }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "millrace.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ $s.terminationGracePeriodSeconds }}
{{- with $s.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $s.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "millrace.kedaNeedsAuth" -}}
{{- if or (include "millrace.kafkaSaslMechanism" .) .Values.kafka.tls.existingSecret }}true{{ end }}
{{- end }}

{{- define "millrace.kedaSettingsSecretName" -}}
{{- printf "%s-keda" (include "millrace.componentName" (dict "root" . "component" "featurizer")) }}
{{- end }}

{{/* The section's constraints, or: spread over nodes and zones, best effort. */}}
{{- define "millrace.topologySpread" -}}
{{- if .section.topologySpreadConstraints }}
{{- toYaml .section.topologySpreadConstraints }}
{{- else }}
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
- maxSkew: 1
  topologyKey: {{ $key }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "millrace.selectorLabels" $.labels | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The console's targets (role -> base URLs), as MILLRACE_METRICS_TARGETS's JSON. */}}
{{- define "millrace.metricsTargets" -}}
{{- $root := . }}
{{- $url := dict }}
{{- $_ := set $url "featurizer" (list (printf "http://%s:8702" (include "millrace.componentName" (dict "root" $root "component" "featurizer")))) }}
{{- $trainers := list }}
{{- $predictors := list }}
{{- range .Values.trainer.models }}
{{- $trainers = append $trainers (printf "http://%s:8703" (include "millrace.componentName" (dict "root" $root "component" "trainer" "model" .name))) }}
{{- $predictors = append $predictors (printf "http://%s:%d" (include "millrace.componentName" (dict "root" $root "component" "predictor" "model" .name)) (int $root.Values.predictor.service.port)) }}
{{- end }}
{{- $_ := set $url "trainer" $trainers }}
{{- $_ := set $url "predictor" $predictors }}
{{- toJson $url }}
{{- end }}
