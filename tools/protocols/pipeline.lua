-- wrk script: sends N requests back to back on each connection (HTTP/1.1 pipelining), as
-- TechEmpower's plaintext test does. N is the first script argument (default 16).
init = function(args)
  local depth = tonumber(args[1]) or 16
  local request = wrk.format()
  local requests = {}
  for i = 1, depth do
    requests[i] = request
  end
  req = table.concat(requests)
end

request = function()
  return req
end
