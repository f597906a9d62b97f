-- POST /api/comments with frontend-shaped bodies (tests/helpers.py human(entity=None) and
-- ai_reply): even requests are plain room messages, odd ones AI replies to one of `users`
-- humans. Neither is queued, so no conversation fills with in-flight bytes (413 backlog).
-- Args: <id prefix, unique per wrk run> [users=1000]
dofile("report.lua")

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

local prefix, users, counter = "p", 1000, 0
local human_text = string.rep("What is the meaning of life, and why do we keep asking? ", 4)
local ai_text = string.rep("An answer that runs for a while, as the bot's replies do. ", 14)

function init(args)
  prefix = args[1] or prefix
  users = tonumber(args[2] or users)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local function human_body(id, user)
  return '{"id":"' .. id .. '","timestamp":1766300000123,"text":"' .. human_text .. '","username":"' .. user ..
    '","color":"080150227","domain":"saywhatwant.app","language":"en","message-type":"human","misc":"",' ..
    '"context":["Human: hi","TheEternal: Hello, traveler."]}'
end

local function ai_body(id, user)
  return '{"id":"' .. id .. '","text":"' .. ai_text .. '","username":"TheEternal","color":"080175220",' ..
    '"message-type":"AI","botParams":{"humanUsername":"' .. user .. '","humanColor":"080150227",' ..
    '"entity":"the-eternal","ais":"TheEternal:080175220"}}'
end

function request()
  counter = counter + 1
  local id = prefix .. "t" .. tid .. "n" .. counter
  local user = "u" .. ((counter * 7 + tid) % users)
  local body = counter % 2 == 0 and human_body(id, user) or ai_body(id, user)
  return wrk.format(nil, nil, nil, body)
end
