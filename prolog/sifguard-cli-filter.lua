-- sifguard: submit-time feedback through Slurm's cli_filter/lua (client side, as the user).
-- For every sbatch/srun/salloc outside an allocation it asks `sifguard-precheck` what the
-- start-time gate will say about the images the job names, and refuses the submission with
-- the reason and the script line ("sbatch: error: sifguard: job.sh:12: ..."). Feedback only:
-- a user can bypass a client filter; the controller prolog stays authoritative. A precheck
-- that fails or takes longer than 10 s lets the submission through.
-- `sifguard slurm install` writes this file with PRECHECK filled in: copy it next to
-- slurm.conf as cli_filter.lua (merge it into an existing one) and set
-- CliFilterPlugins=cli_filter/lua in slurm.conf.
local PRECHECK = "@PRECHECK@"

local function program()
  local f = io.open("/proc/self/comm", "r")
  if f == nil then
    return "slurm"
  end
  local name = f:read("*l") or "slurm"
  f:close()
  return name
end

-- "sbatch: error: sifguard: job.sh:12: ..." (slurm.log_error would prefix "lua: ")
local function say(level, message)
  io.stderr:write(program() .. ": " .. level .. ": " .. message .. "\n")
end

local function quote(s)
  local q = string.gsub(tostring(s), "'", "'\\''")
  return "'" .. q .. "'"
end

function slurm_cli_setup_defaults(options, early)
  return slurm.SUCCESS
end

function slurm_cli_post_submit(offset, jobid, stepid)
  return slurm.SUCCESS
end

function slurm_cli_pre_submit(options, offset)
  if os.getenv("SLURM_JOB_ID") ~= nil then
    return slurm.SUCCESS   -- a step inside an allocation: the shim and the SPANK hook judge it as it runs
  end
  local cmd = "timeout 10 " .. quote(PRECHECK) .. " --lua"
  for _, name in ipairs({"account", "partition", "chdir", "wrap"}) do
    local v = options[name]
    -- an option the running command does not have reads "invalid-context" (e.g. srun's wrap)
    if v ~= nil and v ~= "" and v ~= "invalid-context" then
      cmd = cmd .. " --" .. (name == "chdir" and "cwd" or name) .. " " .. quote(v)
    end
  end
  cmd = cmd .. " --"
  local argv = options["argv"]
  if argv ~= nil then
    for _, a in ipairs(argv) do
      cmd = cmd .. " " .. quote(a)
    end
  end
  local p = io.popen(cmd .. " 2>/dev/null")
  if p == nil then
    return slurm.SUCCESS
  end
  local result = "ok"
  for line in p:lines() do
    if string.sub(line, 1, 8) == "result: " then
      result = string.sub(line, 9)
    elseif string.sub(line, 1, 7) == "error: " then
      say("error", string.sub(line, 8))
    elseif string.sub(line, 1, 9) == "warning: " then
      say("warning", string.sub(line, 10))
    end
  end
  p:close()
  if result == "refuse" then
    return slurm.ERROR
  end
  return slurm.SUCCESS
end
