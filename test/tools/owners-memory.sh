#!/usr/bin/env bash
# owners-memory.sh - measures what the owners of the index ids (ftsync:{P}:owners, README "Index
# ids") cost in Redis: fills a hash with N entries shaped as extract writes them (field: the
# index id; value: canonical extended JSON of the _id holding it) and prints MEMORY USAGE of the
# hash (all of it, SAMPLES 0) and the cost per document. Two shapes:
#   OWNERS_MEMORY_SHAPE=oid (default)  _id ObjectIds, FTSYNC_ID_FIELD=_id, plain ids: the index
#                                      id is the 24 hex digits of the _id
#   OWNERS_MEMORY_SHAPE=field          _id ObjectIds, FTSYNC_ID_FIELD=id with 7-digit values
#
#   test/tools/owners-memory.sh [redis-cli arguments...]   e.g. -p 6399
# Uses the key ftsync:{owners-memory}:owners of the server it is given, and deletes it
# afterwards.
set -euo pipefail
count=${OWNERS_MEMORY_COUNT:-100000}
shape=${OWNERS_MEMORY_SHAPE:-oid}
key='ftsync:{owners-memory}:owners'
cli=(redis-cli "$@")
"${cli[@]}" DEL "$key" >/dev/null
# One HSET per 1000 entries, generated in Lua on the server (no client round trips).
"${cli[@]}" EVAL "
for i = 0, tonumber(ARGV[1]) - 1, 1000 do
  local args = {}
  for j = i, math.min(i + 999, tonumber(ARGV[1]) - 1) do
    local hex = string.format('65a0%020x', j)
    if ARGV[2] == 'field' then
      args[#args + 1] = tostring(1000000 + j)
    else
      args[#args + 1] = hex
    end
    args[#args + 1] = '{ \"\$oid\" : \"' .. hex .. '\" }'
  end
  redis.call('HSET', KEYS[1], unpack(args))
end
return redis.call('HLEN', KEYS[1])" 1 "$key" "$count" "$shape" >/dev/null
bytes=$("${cli[@]}" MEMORY USAGE "$key" SAMPLES 0)
entries=$("${cli[@]}" HLEN "$key")
encoding=$("${cli[@]}" OBJECT ENCODING "$key")
version=$("${cli[@]}" INFO server | sed -n 's/^redis_version:\([^\r]*\).*/\1/p')
"${cli[@]}" DEL "$key" >/dev/null
echo "redis $version: shape $shape, $entries entries, encoding $encoding, MEMORY USAGE $bytes" \
     "bytes, $((bytes / entries)) bytes per document"
