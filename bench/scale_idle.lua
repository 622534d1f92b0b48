-- wrk script for bench/scale.py's idle check-ins: pre-signed Idle PUTs, as enrolled iPhones send them.
--
--   wrk -t1 -cN -dS --latency -s bench/scale_idle.lua https://host:port/mdm/... -- devices.lua
--
-- devices.lua (written by bench/scale.py) returns {content_type = "...", devices = {{body = "...", sig = "..."},
-- ...}}, one entry per enrolled device: its signed Idle plist and its Mdm-Signature header. All requests are formatted once in init();
-- request() hands them out in turn. wrk keeps each connection alive, as iOS does. wrk's Lua API has no
-- per-connection hook, so a connection carries the devices' check-ins in turn rather than one device's
-- only; each request is self-contained (its own signature), so the server does the same work either way.
-- done() prints one line, "SCALE-JSON {...}", which bench/scale.py parses.

local requests = {}
local next_index = 1

function init(args)
   local fleet = dofile(args[1])
   for i, d in ipairs(fleet.devices) do
      requests[i] = wrk.format("PUT", wrk.path, {
         ["Host"] = wrk.headers["Host"],
         ["Content-Type"] = fleet.content_type,
         ["Mdm-Signature"] = d.sig,
      }, d.body)
   end
end

function request()
   local r = requests[next_index]
   next_index = next_index % #requests + 1
   return r
end

function done(summary, latency, requests_stats)
   local e = summary.errors
   io.write(string.format(
      'SCALE-JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
