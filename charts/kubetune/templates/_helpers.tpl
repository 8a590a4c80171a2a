{{- define "kubetune.name" -}}kubetune{{- end -}}

{{- define "kubetune.fullname" -}}
{{- if contains "kubetune" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-kubetune" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kubetune.labels" -}}
app.kubernetes.io/name: kubetune
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: kubetune
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "kubetune.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "kubetune.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Exactly what the operator does, nothing more (tests/chart runs the operator with these rules). */}}
{{- define "kubetune.rules" -}}
- apiGroups: [kubetune.io]
  resources: [finetunejobs, modelserves]
  verbs: [get, list, watch]
- apiGroups: [kubetune.io]
  resources: [finetunejobs]
  verbs: [delete]  # ttlSecondsAfterFinished
- apiGroups: [kubetune.io]
  resources: [finetunejobs/status, modelserves/status]
  verbs: [get, patch]  # get: the launcher's Role grants it, and RBAC grants only what one holds
- apiGroups: [kubetune.io]
  resources: [finetunejobs/finalizers, modelserves/finalizers]
  verbs: [update]  # children are created with blockOwnerDeletion (OwnerReferencesPermissionEnforcement)
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch{{ if .Values.adoptOrphans }}, delete{{ end }}]  # delete: see configmaps
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  # delete (adoptOrphans): taking back the operator's own orphan (after --cascade=orphan) sets its
  # ownerReferences, which OwnerReferencesPermissionEnforcement allows only to who may delete it. The
  # operator deletes none of these. list, watch: the operator watches its ModelServes' ConfigMaps (by
  # label: whether each stands as written, and the sidecars' reports), and each ModelServe pod's sidecar
  # watches its own adapters ConfigMap (its Role's resourceNames), which RBAC lets the operator grant only
  # when it holds it.
  verbs: [get, list, watch, create, patch{{ if .Values.adoptOrphans }}, delete{{ end }}]
- apiGroups: [""]
  resources: [services, serviceaccounts]
  # get: a child is written only if it is the resource's own; list, watch: a ModelServe's (by label), to
  # tell whether each stands as written; delete: see configmaps
  verbs: [get, list, watch, create, patch{{ if .Values.adoptOrphans }}, delete{{ end }}]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch]  # watched: a missing claim is reported, and a claim created later wakes its users
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]  # list: the Job controller's FailedCreate (pods refused by admission)
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  # list, watch: a ModelServe's, as services; delete: see configmaps
  verbs: [get, list, watch, create, patch{{ if .Values.adoptOrphans }}, delete{{ end }}]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]  # list, watch: a ModelServe's, as services
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, create, patch, delete]  # get before apply and delete: only this resource's own
{{- end -}}
