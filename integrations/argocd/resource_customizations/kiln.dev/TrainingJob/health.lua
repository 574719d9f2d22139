-- Argo CD health of a kiln.dev TrainingJob, from status.phase (the operator
-- writes it; api/v1alpha1/trainingjob.yaml). Like a batch Job: Progressing
-- while it trains, Healthy once it has succeeded.
local hs = {status = "Progressing", message = ""}

local function condition(status, type)
  if status.conditions == nil then return nil end
  for _, c in ipairs(status.conditions) do
    if c.type == type then return c end
  end
  return nil
end

local function progress(status)
  if status.step == nil then return "" end
  local text = "step " .. string.format("%d", status.step)
  if status.loss ~= nil then text = text .. ", loss " .. string.format("%.4f", status.loss) end
  return text
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.message = "Waiting for the operator to observe the TrainingJob"
  return hs
end
local phase = status.phase

-- A finished job stays finished whatever its spec says later.
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Succeeded"
  local p = progress(status)
  if p ~= "" then hs.message = hs.message .. " at " .. p end
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  local c = condition(status, "Failed")
  hs.message = "Failed"
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    hs.message = hs.message .. ": " .. c.reason .. ": " .. c.message
  end
  return hs
end
if obj.metadata.generation ~= nil and
    (status.observedGeneration == nil or status.observedGeneration < obj.metadata.generation) then
  hs.message = "Waiting for the operator to observe generation " ..
      string.format("%d", obj.metadata.generation)
  return hs
end
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.suspend); resumes from its last checkpoint when cleared"
  return hs
end
if phase == "Running" then
  local ready = status.readyWorkers or 0
  hs.message = "Running, " .. string.format("%d", ready) .. " workers ready"
  local p = progress(status)
  if p ~= "" then hs.message = hs.message .. ", " .. p end
  return hs
end
if phase == "Restarting" then
  local restarts = status.restarts or 0
  hs.message = "Restarting (restart " .. string.format("%d", restarts) .. ")"
  local history = status.restartHistory
  if history ~= nil and #history > 0 then
    local last = history[#history]
    hs.message = hs.message .. ": " .. last.reason
    if last.message ~= nil and last.message ~= "" then
      hs.message = hs.message .. ": " .. last.message
    end
  end
  return hs
end
if phase == "Resizing" then
  -- kubectl scale, or an elastic job growing into freed capacity.
  local c = condition(status, "Resizing")
  hs.message = "Resizing"
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    hs.message = hs.message .. ": " .. c.message
  end
  return hs
end
if phase == "Scheduled" then
  hs.message = "Scheduled; waiting for the workers to run"
  return hs
end
-- Pending: waiting for the placement engine; its reason is in Scheduled.
local scheduled = condition(status, "Scheduled")
hs.message = phase
if scheduled ~= nil and scheduled.status == "False" and scheduled.message ~= nil then
  hs.message = hs.message .. ": " .. scheduled.reason .. ": " .. scheduled.message
end
return hs
