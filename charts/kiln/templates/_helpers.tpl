{{/*
Names and labels shared by every template. Names are cut to 63 characters, the
limit of a DNS label (and of a label value), with any trailing dash removed.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "kiln.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name: fullnameOverride, else the release name when it
already contains the chart's name (so release "kiln" gives "kiln", not
"kiln-kiln"), else "<release>-<name>".
*/}}
{{- define "kiln.fullname" -}}
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

{{/* Name of the operator's objects (Deployment, ServiceAccount, RBAC, Lease). */}}
{{- define "kiln.operator.fullname" -}}
{{- printf "%s-operator" (include "kiln.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* Name of the operator's metrics Service (a Service name is at most 63 characters). */}}
{{- define "kiln.metrics.fullname" -}}
{{- printf "%s-operator-metrics" (include "kiln.fullname" . | trunc 46 | trimSuffix "-") }}
{{- end }}

{{/* Name of the router's Deployment and Service. */}}
{{- define "kiln.router.fullname" -}}
{{- printf "%s-router" (include "kiln.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label ("+" is not allowed in labels). */}}
{{- define "kiln.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release, so a Deployment's selector
never changes on upgrade. Takes a dict: context (the root scope) and component
(operator, router, crds).
*/}}
{{- define "kiln.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kiln.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every object's labels: the selector labels plus version, chart and manager. Same dict as above. */}}
{{- define "kiln.labels" -}}
{{ include "kiln.selectorLabels" . }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
helm.sh/chart: {{ include "kiln.chart" .context }}
{{- end }}

{{/*
The ServiceAccount the operator runs as. Without create, a name is required:
binding the operator's ClusterRole to the namespace's "default" account would
hand its rights to every pod there that does not name an account.
*/}}
{{- define "kiln.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kiln.operator.fullname" .) .Values.serviceAccount.name }}
{{- else if .Values.serviceAccount.name }}
{{- .Values.serviceAccount.name }}
{{- else }}
{{- fail "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" }}
{{- end }}
{{- end }}

{{/* "repository:tag" (tag defaults to the chart's appVersion). Takes an image value. */}}
{{- define "kiln.image" -}}
{{- printf "%s:%s" .image.repository (default .context.Chart.AppVersion .image.tag) }}
{{- end }}

{{/*
Security context of every kiln container: no root, no privilege escalation, no
Linux capabilities, a read-only root filesystem and the runtime's default
seccomp profile (the "restricted" Pod Security Standard). Not configurable on
purpose; only the user id is (see runAsUser in values.yaml).
*/}}
{{- define "kiln.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The pod-level half of the above. */}}
{{- define "kiln.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.runAsUser }}
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}
