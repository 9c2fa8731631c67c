-- Argo CD health check for vmmigration.dev/VMMigration.
-- Healthy: the VM runs on its target (Placed, not drifted).
-- Progressing: pending, validating, migrating, or the operator has not seen
-- the latest spec yet (observedGeneration behind metadata.generation).
-- Degraded: failed, blocked, or drifted. Suspended: aborted by spec.abort, or
-- displaced while its pinned Hypervisor is in maintenance.
local hs = {status = "Progressing", message = "Waiting for the vmmigration operator"}
if obj.status == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "The operator has not acted on generation " .. tostring(generation) .. " yet"
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    conditions[condition.type] = condition
  end
end
local function said(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return fallback
end
local phase = obj.status.phase or "Pending"
local ready = conditions["Ready"]
local blocked = conditions["Blocked"]
local drifted = conditions["Drifted"]
if drifted ~= nil and drifted.status == "True" then
  hs.status = "Degraded"
  hs.message = said(drifted, "The VM is not on its target")
elseif phase == "Placed" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said(ready, "Placed")
elseif phase == "Aborted" then
  hs.status = "Suspended"
  hs.message = said(ready, "Aborted by spec.abort")
elseif phase == "Displaced" then
  hs.status = "Suspended"
  hs.message = said(ready, "Displaced while its Hypervisor is in maintenance")
elseif phase == "Failed" then
  hs.status = "Degraded"
  local failure = obj.status.lastFailure
  if failure ~= nil and failure.message ~= nil then
    hs.message = (failure.reason or "Failed") .. ": " .. failure.message
  else
    hs.message = said(ready, "The migration failed")
  end
elseif blocked ~= nil and blocked.status == "True" then
  hs.status = "Degraded"
  hs.message = (blocked.reason or "Blocked") .. ": " .. said(blocked, "blocked")
else
  hs.status = "Progressing"
  local progress = obj.status.progressText
  local message = said(conditions["Progressing"], said(conditions["Queued"], said(ready, phase)))
  if phase == "Migrating" and progress ~= nil then
    message = progress .. " " .. message
  end
  hs.message = message
end
return hs
