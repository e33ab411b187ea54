-- Argo CD health of a secureai.dev SecureInferenceService, from status.phase and
-- status.conditions. Phases: Pending, Running, Ready, Succeeded, Failed, Rejected, Degraded,
-- Quarantined.
-- Argo CD runs it in gopher-lua (Lua 5.1) with only the base, table and package libraries:
-- no string, math or os here (tests/gitops runs it the same way).
local hs = {}
local fallback = {Failed = "the service failed", Degraded = "the service is degraded"}

local function condition(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function text(c, default)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return default
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the secureai operator to reconcile the service"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the secureai operator to reconcile generation " .. tostring(generation)
  return hs
end

local phase = obj.status.phase
local ready = condition("Ready")

if phase == "Rejected" then
  hs.status = "Degraded"
  hs.message = "Rejected: " .. text(ready, "the spec breaks the schema or cluster policy")
  return hs
end
-- Contained by a Quarantine (incident response): never healthy, whatever else holds.
if phase == "Quarantined" then
  hs.status = "Degraded"
  hs.message = "Quarantined: " .. text(condition("Quarantined"), "contained by a Quarantine")
  return hs
end
if phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = text(ready, fallback[phase])
  return hs
end

-- A service that serves but lost its isolation or hardening is not healthy.
for _, ctype in ipairs({"Isolated", "Hardened"}) do
  local c = condition(ctype)
  if c ~= nil and c.status == "False" then
    hs.status = "Degraded"
    hs.message = ctype .. "=False: " .. text(c, c.reason or "")
    return hs
  end
end

if (phase == "Ready" or phase == "Running" or phase == "Succeeded")
    and ready ~= nil and ready.status == "True" then
  if obj.spec ~= nil and obj.spec.replicas == 0 then
    hs.status = "Suspended"
    hs.message = "Scaled to zero replicas"
    return hs
  end
  hs.status = "Healthy"
  hs.message = text(ready, "all replicas are available")
  return hs
end

hs.status = "Progressing"
local placed = condition("Placed")
if placed ~= nil and placed.status ~= "True" then
  hs.message = text(placed, "waiting for nodes")
else
  hs.message = text(ready, "waiting for replicas")
end
return hs
