-- wrk script for the bench. Arguments (after --): [1] a file of bearer tokens, one per line,
-- to rotate through ("-" for none: headers then come from -H and the request is built once);
-- [2] the method (default GET). done() prints one JSON line with the figures run.py reads.

local tokens = {}
local index = 0

function init(args)
  if args[2] then
    wrk.method = args[2]
  end
  if args[1] and args[1] ~= "-" then
    for line in io.lines(args[1]) do
      tokens[#tokens + 1] = line
    end
    index = math.random(#tokens)
    -- Defined only when rotating, so that a fixed request stays precomputed by wrk.
    request = function()
      index = index % #tokens + 1
      return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[index] })
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%.6f,"errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
