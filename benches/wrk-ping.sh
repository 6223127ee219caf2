# Sourced by the benches that run wrk (generator.sh, side-by-side.sh).
# wrk_ping_script PORT FILE: opens 20 MCP sessions on the stand-in at 127.0.0.1:PORT (as
# the drill uses: rmcp serves one session's requests one after another) and writes wrk's
# Lua script to FILE: a POST of MCP ping on each session in turn.
wrk_ping_script() {
  local port=$1 file=$2 sid sids=()
  local h=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream')
  for _ in $(seq 20); do
    sid=$(curl -s -D - "${h[@]}" -o /dev/null -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"wrk","version":"1"}}}' "http://127.0.0.1:$port/mcp" | awk 'tolower($1)=="mcp-session-id:" {print $2}' | tr -d '\r')
    curl -s "${h[@]}" -H "mcp-session-id: $sid" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' "http://127.0.0.1:$port/mcp" >/dev/null
    sids+=("\"$sid\"")
  done
  cat >"$file" <<LUA
local sids = { $(IFS=,; echo "${sids[*]}") }
local i = 0
request = function()
  i = i % #sids + 1
  return wrk.format("POST", nil, {
    ["content-type"] = "application/json",
    ["accept"] = "application/json, text/event-stream",
    ["mcp-session-id"] = sids[i],
  }, '{"jsonrpc":"2.0","id":1,"method":"ping"}')
end
LUA
}
