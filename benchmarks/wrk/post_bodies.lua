-- wrk script of `skewless bench serving`: POST JSON bodies read from a file (one body per
-- line), cycling through them so that requests rotate over many entities; each wrk thread
-- starts at its own offset. The requests are formatted once, in init, not per request.
--
--   wrk -t2 -c8 -d10s --latency -s post_bodies.lua http://127.0.0.1:8000/v1/features -- bodies.jsonl
--
-- At the end one line "WRKJSON {...}" gives the figures as JSON (latencies in microseconds,
-- "non2xx" = responses with a status outside 2xx/3xx, as in wrk's own summary).

local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local requests = {}
local i = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("give the bodies file after --")
  end
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(path) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  if #requests == 0 then
    error("no bodies in " .. path)
  end
  -- spread the threads over the file
  i = (id * 7919) % #requests
end

function request()
  i = i % #requests + 1
  return requests[i]
end

function done(summary, latency, reqs)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"lat_mean_us":%.1f,"lat_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
