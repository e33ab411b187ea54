{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "secureai.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "secureai.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "secureai.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "secureai.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The ServiceAccount of `secureai audit` (audit.serviceAccount). */}}
{{- define "secureai.auditServiceAccount" -}}
{{- default (printf "%s-audit" (include "secureai.fullname" .)) .Values.audit.serviceAccount.name -}}
{{- end -}}

{{/* The username the API server sees for the operator's ServiceAccount. */}}
{{- define "secureai.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "secureai.serviceAccountName" .) -}}
{{- end -}}

{{- define "secureai.peeringName" -}}
{{- default (include "secureai.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* The operator image: an explicit digest, else an explicit tag, else the digest that
`make images` built (images.json, generated next to Chart.yaml), else the chart's version. */}}
{{- define "secureai.image" -}}
{{- $digest := .Values.image.digest -}}
{{- if and (not $digest) (not .Values.image.tag) -}}
{{- with .Files.Get "images.json" -}}
{{- $built := index (fromJson .) "images" "secureai-operator" -}}
{{- if eq $built.repository $.Values.image.repository -}}
{{- $digest = $built.digest -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $digest -}}
{{- printf "%s@%s" .Values.image.repository $digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------------ */}}

{{- define "secureai.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secureai.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Labels of every object the chart renders. Note: never `app.kubernetes.io/managed-by: secureai`
(that marks the operator's own children); Helm's convention value is "Helm".
*/}}
{{- define "secureai.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "secureai.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: secureai
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
metadata.annotations of a chart object: the Argo CD sync wave (argocd.syncWaves toggles it) and
any extra annotations; nothing at all when empty.
Usage: {{- include "secureai.annotations" (list . "-5" (dict "k" "v")) | nindent 2 }}
*/}}
{{- define "secureai.annotations" -}}
{{- $root := index . 0 -}}
{{- $ann := dict -}}
{{- if $root.Values.argocd.syncWaves -}}
{{- $_ := set $ann "argocd.argoproj.io/sync-wave" (index . 1 | toString) -}}
{{- end -}}
{{- if gt (len .) 2 -}}
{{- $ann = merge $ann (index . 2) -}}
{{- end -}}
{{- if $ann -}}
annotations:
  {{- toYaml $ann | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* For kinds whose CRD may be missing when Argo CD dry-runs the sync. */}}
{{- define "secureai.skipDryRun" -}}
{{- dict "argocd.argoproj.io/sync-options" "SkipDryRunOnMissingResource=true" | toJson -}}
{{- end -}}

{{/* Namespaces with the operator's namespaced rights (namespaced mode only). */}}
{{- define "secureai.watchNamespaces" -}}
{{- $out := list -}}
{{- range .Values.watchNamespaces -}}
{{- $out = append $out . -}}
{{- end -}}
{{- toJson (uniq $out) -}}
{{- end -}}
