-- Argo CD health check for vmmigration.dev/Hypervisor.
-- Healthy: the operator's last probe reached libvirt. Suspended: in
-- maintenance. Degraded: unreachable. Progressing: not probed yet.
local hs = {status = "Progressing", message = "Waiting for the first probe"}
if obj.spec ~= nil and obj.spec.maintenance == true then
  hs.status = "Suspended"
  hs.message = "In maintenance: no new VMs, selector-placed VMs move away"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Reachable" then
    if condition.status == "True" then
      hs.status = "Healthy"
      hs.message = condition.message or "libvirt reachable"
    else
      hs.status = "Degraded"
      hs.message = condition.message or "libvirt unreachable"
    end
    return hs
  end
end
return hs
