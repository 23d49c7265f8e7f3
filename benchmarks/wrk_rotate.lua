-- Closed-loop load for wrk: every connection sends a request, waits for its response, sends the next.
-- Request bodies (one JSON body per line of the file given after `--`) are formatted once in init and
-- rotated, so each request carries a different text and nothing is built per request.
-- done() prints one line, "WRK_JSON {...}", with counts, errors and latency percentiles in microseconds.

local thread_count = 0
function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local requests = {}
local position = 0
function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("POST", args[2] or "/v1/classify", headers, line)
  end
  position = (thread_index or 0) * 997 % #requests  -- threads start at different texts
end

function request()
  position = position % #requests + 1
  return requests[position]
end

function done(summary, latency, _)
  local e = summary.errors
  local p = {}
  for _, q in ipairs({ 50, 90, 95, 99, 99.9 }) do
    p[#p + 1] = string.format('"%s": %d', tostring(q), latency:percentile(q))
  end
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "max": %d, %s}}\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, table.concat(p, ", ")))
end
