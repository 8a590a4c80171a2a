-- Argo CD health of a kubetune ModelServe (kubetune.io/v1alpha1), read from its status.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubetune operator"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on the latest spec"
  return hs
end
local phase = obj.status.phase
if phase == "Ready" then
  hs.status = "Healthy"
elseif phase == "Degraded" or phase == "Failed" then
  hs.status = "Degraded"
else
  -- Pending (loading the model, unschedulable, waiting for a claim) and Progressing (a rollout).
  hs.status = "Progressing"
end
hs.message = obj.status.message or phase
return hs
