-- Argo CD health of a kubetune FineTuneJob (kubetune.io/v1alpha1), read from its status.
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
local message = obj.status.message or phase
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Suspended" then
  hs.status = "Suspended"
else
  -- Pending (the message says why: queued, unschedulable, restarting...) and Running.
  hs.status = "Progressing"
  local progress = obj.status.progress
  if phase == "Running" and progress ~= nil and progress.display ~= nil then
    message = message .. " (" .. progress.display .. ")"
  end
end
hs.message = message
return hs
