{{/* Names, labels and the kubectl-vault command line shared by the templates. */}}

{{- define "vault-bootstrap.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vault-bootstrap.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "vault-bootstrap.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vault-bootstrap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vault-bootstrap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vault-bootstrap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Namespace of the Vault/OpenBao pods. */}}
{{- define "vault-bootstrap.targetNamespace" -}}
{{- default .Release.Namespace .Values.target.namespace }}
{{- end }}

{{- define "vault-bootstrap.serviceAccountName" -}}
{{- default (include "vault-bootstrap.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
The ServiceAccount of the long-running workloads (the auto-unseal Deployment
and the snapshot CronJob): they only read the stored keys, so they do not
share the hook's account, which may write and delete them.
*/}}
{{- define "vault-bootstrap.workloadServiceAccountName" -}}
{{- printf "%s-workloads" (include "vault-bootstrap.serviceAccountName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vault-bootstrap.workloadsEnabled" -}}
{{- if or .Values.autoUnseal.enabled .Values.snapshot.enabled }}true{{ end }}
{{- end }}

{{/*
The server StatefulSet, named the way the upstream charts name it: the
release name when it contains the chart name, else `<release>-<chart>`
(their `fullname` helper), unless target.statefulset overrides it.
*/}}
{{- define "vault-bootstrap.statefulset" -}}
{{- if .Values.target.statefulset }}
{{- .Values.target.statefulset }}
{{- else }}
{{- $release := required "target.release is required: the Helm release name of the servers" .Values.target.release }}
{{- $chart := .Values.target.chart }}
{{- if contains $chart $release }}
{{- $release | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" $release $chart | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The server pods: the release's, unless target.selector says otherwise. */}}
{{- define "vault-bootstrap.selector" -}}
{{- default (printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s,component=server" .Values.target.chart .Values.target.release) .Values.target.selector }}
{{- end }}

{{/* The credentials Secret; kubectl-vault's own default, spelled out. */}}
{{- define "vault-bootstrap.secretName" -}}
{{- default (printf "%s-unseal" (include "vault-bootstrap.statefulset" .)) .Values.credentials.secretName }}
{{- end }}

{{/* The Lease kubectl-vault takes so that two runs never init at once. */}}
{{- define "vault-bootstrap.leaseName" -}}
{{- printf "%s-kubectl-vault" (include "vault-bootstrap.statefulset" .) }}
{{- end }}

{{/*
The age identity Secret, `[namespace/]name` as kubectl-vault takes it; the
namespace defaults to the target namespace.
*/}}
{{- define "vault-bootstrap.identitySecretNamespace" -}}
{{- $parts := splitList "/" .Values.credentials.age.identitySecret }}
{{- if eq (len $parts) 2 }}{{ first $parts }}{{ else }}{{ include "vault-bootstrap.targetNamespace" . }}{{ end }}
{{- end }}

{{- define "vault-bootstrap.identitySecretName" -}}
{{- last (splitList "/" .Values.credentials.age.identitySecret) }}
{{- end }}

{{- define "vault-bootstrap.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Arguments every kubectl-vault invocation shares: where the cluster and the keys are. */}}
{{- define "vault-bootstrap.targetArgs" -}}
- --namespace
- {{ include "vault-bootstrap.targetNamespace" . | quote }}
- --selector
- {{ include "vault-bootstrap.selector" . | quote }}
- --secret-name
- {{ include "vault-bootstrap.secretName" . | quote }}
- --log-format
- json
{{- range .Values.credentials.age.recipients }}
- --age-recipient
- {{ . | quote }}
{{- end }}
{{- with .Values.credentials.age.identitySecret }}
- --age-identity-secret
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Pod-level security: the restricted Pod Security Standard. */}}
{{- define "vault-bootstrap.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "vault-bootstrap.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Values that cannot be checked by the schema alone. */}}
{{- define "vault-bootstrap.validate" -}}
{{- if gt (int .Values.keyThreshold) (int .Values.keyShares) }}
{{- fail (printf "keyThreshold (%d) must not exceed keyShares (%d)" (int .Values.keyThreshold) (int .Values.keyShares)) }}
{{- end }}
{{- if and .Values.credentials.age.recipients (not .Values.credentials.age.identitySecret) }}
{{- fail "credentials.age.recipients needs credentials.age.identitySecret: kubectl-vault reads back every encrypted write and unseals with the stored keys, so the hook needs an age identity for one of the recipients" }}
{{- end }}
{{- $timeout := toString .Values.hook.timeout }}
{{- $n := regexFind "^[0-9]+" $timeout | int }}
{{- $unit := regexReplaceAll "^[0-9]+" $timeout "" }}
{{- $seconds := get (dict "" $n "s" $n "m" (mul $n 60) "h" (mul $n 3600) "ms" (div $n 1000)) $unit | int }}
{{- if ge $seconds (int .Values.hook.activeDeadlineSeconds) }}
{{- fail (printf "hook.timeout (%s = %ds) must be below hook.activeDeadlineSeconds (%d), so kubectl-vault gives up and says why before Kubernetes kills the Job" $timeout $seconds (int .Values.hook.activeDeadlineSeconds)) }}
{{- end }}
{{- if and (gt (int .Values.keyShares) 1) (lt (int .Values.keyThreshold) 2) }}
{{- fail "keyThreshold must be at least 2 when keyShares is more than 1 (Vault refuses threshold 1 with several shares)" }}
{{- end }}
{{- end }}
