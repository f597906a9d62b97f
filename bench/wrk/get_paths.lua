-- GET each path given as an argument in turn (one path: the same poll every time).
-- Args: <path> [path...]
dofile("report.lua")

local paths, at = {}, 0

function init(args)
  for _, path in ipairs(args) do paths[#paths + 1] = path end
end

function request()
  at = at % #paths + 1
  return wrk.format("GET", paths[at])
end
