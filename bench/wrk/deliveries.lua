-- wrk script: POSTs pre-signed GitHub deliveries to `scalehook serve`.
--
-- The requests come from the file named by WRK_DELIVERIES (written by bench/measure.py):
-- per request a header line "event<TAB>signature<TAB>guid<TAB>body-length<TAB>job", then
-- the body bytes and a newline. Job j's deliveries go to thread j % threads, in file order,
-- so each thread plays whole job lives (queued, in_progress, completed); when a thread
-- reaches the end of its share it starts over, and from then on its requests are
-- redeliveries (duplicates), which scalehook handles like any delivery (200, no change).
-- wrk counts answers other than 2xx/3xx in errors.status. At the end the counts and the
-- latency percentiles go to stdout as one JSON line prefixed with "WRK_RESULT ".
-- No response() callback: it would make wrk parse every answer in Lua.

local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
end

function init(args)
  local path = os.getenv("WRK_DELIVERIES")
  local count = tonumber(os.getenv("WRK_THREADS") or "1")
  local f = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  requests = {}
  local n = 0
  while true do
    local line = f:read("*l")
    if not line then break end
    local event, signature, guid, length, job = line:match("^(%S+)\t(%S+)\t(%S+)\t(%d+)\t(%d+)$")
    assert(event, "bad header line: " .. line)
    local body = f:read(tonumber(length))
    f:read(1)
    if tonumber(job) % count == index then
      n = n + 1
      requests[n] = wrk.format("POST", "/webhook", {
        ["Content-Type"] = "application/json",
        ["X-GitHub-Event"] = event,
        ["X-GitHub-Delivery"] = guid,
        ["X-Hub-Signature-256"] = signature,
        ["User-Agent"] = "GitHub-Hookshot/bench",
      }, body)
    end
  end
  f:close()
  assert(n > 0, "no requests for thread " .. index)
  total = n
  position = 0
end

function request()
  position = position + 1
  if position > total then position = 1 end
  return requests[position]
end

function done(summary, latency, requests_stats)
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,"bytes":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, summary.bytes))
end
