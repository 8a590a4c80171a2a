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
-- A spec refused while an attempt runs leaves the phase alone (the attempt keeps running with the spec
-- it started with); the applied revision is still wrong, so it shows as Degraded, with the field.
local refused = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Stalled" and condition.status == "True" then
      refused = condition.message
    end
  end
end
if refused ~= nil and phase ~= "Succeeded" and phase ~= "Failed" then
  hs.status = "Degraded"
  hs.message = refused .. " (phase " .. phase .. ")"
  return hs
end
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
