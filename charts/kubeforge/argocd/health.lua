-- Argo CD health check for kubeforge's InferenceFleet and TrainingJob (both kinds use this one script).
-- Install it under resource.customizations.health.kubeforge.dev_InferenceFleet and
-- resource.customizations.health.kubeforge.dev_TrainingJob in argocd-cm (see the chart README).
--
-- It reads the conditions kstatus reads, in the same order, so Argo CD and Flux agree:
--   status.observedGeneration behind metadata.generation  -> Progressing (the operator has not seen the spec)
--   Stalled=True                                          -> Degraded (rolled back, aborted, invalid, failed)
--   a fleet's rollout Paused, a job's phase Suspended     -> Suspended (waiting for a person)
--   Reconciling=True                                      -> Progressing (rollout, scaling, gang start, running)
--   Degraded=True                                         -> Degraded
--   Ready=True                                            -> Healthy
--   anything else                                         -> Progressing
-- Written for Lua 5.1, the dialect of the interpreter Argo CD embeds.

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local function health(o)
  local status = o.status
  if status == nil then
    return "Progressing", "Waiting for the operator to write a status"
  end
  local generation = o.metadata and o.metadata.generation
  if generation ~= nil and status.observedGeneration ~= generation then
    return "Progressing", "Waiting for the operator to observe generation " .. tostring(generation)
  end
  local stalled = condition(status, "Stalled")
  if is_true(stalled) then
    return "Degraded", text(stalled, "Stalled")
  end
  if o.kind == "InferenceFleet" and status.rollout ~= nil and status.rollout.phase == "Paused" then
    return "Suspended", status.rollout.message or "Rollout paused"
  end
  if o.kind == "TrainingJob" and status.phase == "Suspended" then
    return "Suspended", status.message or "Suspended by spec.suspend"
  end
  local reconciling = condition(status, "Reconciling")
  if is_true(reconciling) then
    return "Progressing", text(reconciling, "Reconciling")
  end
  local degraded = condition(status, "Degraded")
  if is_true(degraded) then
    return "Degraded", text(degraded, "Degraded")
  end
  local ready = condition(status, "Ready")
  if is_true(ready) then
    return "Healthy", text(ready, "Ready")
  end
  return "Progressing", text(ready, "Waiting for the Ready condition")
end

local hs = {}
hs.status, hs.message = health(obj)
return hs
