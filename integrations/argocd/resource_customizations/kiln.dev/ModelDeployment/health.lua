-- Argo CD health of a kiln.dev ModelDeployment, from status.phase (the
-- operator writes it; api/v1alpha1/modeldeployment.yaml), as Argo CD judges
-- an Argo Rollout: a paused rollout is Suspended, an aborted one Degraded.
local hs = {status = "Progressing", message = ""}

local status = obj.status
if status == nil or status.phase == nil then
  hs.message = "Waiting for the operator to observe the ModelDeployment"
  return hs
end
if obj.metadata.generation ~= nil and
    (status.observedGeneration == nil or status.observedGeneration < obj.metadata.generation) then
  hs.message = "Waiting for the operator to observe generation " ..
      string.format("%d", obj.metadata.generation)
  return hs
end

local phase = status.phase
local message = status.message or ""
local function with(text)
  if message == "" then return text end
  return text .. ": " .. message
end

if phase == "Healthy" then
  hs.status = "Healthy"
  hs.message = with("Healthy")
elseif phase == "Progressing" then
  hs.message = with("Progressing")
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = with("Paused")
elseif phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = with("Degraded")
elseif phase == "Aborted" then
  -- The version in spec.model does not serve until the action changes.
  hs.status = "Degraded"
  hs.message = with("Aborted")
elseif phase == "RolledBack" then
  -- Healthy once Git names the version that serves again (a reverted
  -- spec.model); after rollout.action Rollback, spec.model still names the
  -- version rolled back from, which does not serve.
  local model = obj.spec and obj.spec.model
  if model ~= nil and status.stableVersion ~= nil and model.version == status.stableVersion then
    hs.status = "Healthy"
  else
    hs.status = "Degraded"
  end
  hs.message = with("RolledBack")
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. phase
end
return hs
