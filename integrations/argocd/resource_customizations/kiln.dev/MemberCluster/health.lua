-- Argo CD health of a kiln.dev MemberCluster, from its Ready and Unreachable
-- conditions (the operator's heartbeat; docs/fleet.md lists their reasons).
local hs = {status = "Progressing", message = ""}

local function condition(status, type)
  if status.conditions == nil then return nil end
  for _, c in ipairs(status.conditions) do
    if c.type == type then return c end
  end
  return nil
end

local function say(c)
  if c.message == nil or c.message == "" then return c.reason end
  return c.reason .. ": " .. c.message
end

local status = obj.status
local ready = status and condition(status, "Ready")
if ready == nil then
  hs.message = "Waiting for the first heartbeat"
  return hs
end
local unreachable = condition(status, "Unreachable")
if unreachable ~= nil and unreachable.status == "True" then
  hs.status = "Degraded"
  hs.message = "Unreachable: " .. say(unreachable)
  return hs
end
if ready.status ~= "True" then
  -- Caches still listing, or a heartbeat failing for less than
  -- spec.unreachableAfter, may right themselves; a bad Secret, kubeconfig or
  -- credentials do not.
  if ready.reason == "CachesNotSynced" or ready.reason == "HeartbeatTimeout" or
      ready.reason == "HeartbeatFailed" then
    hs.message = "Not ready: " .. say(ready)
  else
    hs.status = "Degraded"
    hs.message = "Not ready: " .. say(ready)
  end
  return hs
end
if obj.metadata.generation ~= nil and
    (status.observedGeneration == nil or status.observedGeneration < obj.metadata.generation) then
  hs.message = "Waiting for the operator to observe generation " ..
      string.format("%d", obj.metadata.generation)
  return hs
end
local capacity = string.format("%d", status.nodes or 0) .. " nodes, " ..
    string.format("%d", status.allocatableGPUs or 0) .. " of " ..
    string.format("%d", status.totalGPUs or 0) .. " GPUs free"
if obj.spec ~= nil and obj.spec.cordoned then
  hs.status = "Suspended"
  hs.message = "Cordoned: takes no new work; " .. capacity
  return hs
end
hs.status = "Healthy"
hs.message = "Ready: " .. capacity
if status.quarantinedNodes ~= nil and status.quarantinedNodes > 0 then
  hs.message = hs.message .. "; " .. string.format("%d", status.quarantinedNodes) ..
      " nodes quarantined"
end
return hs
