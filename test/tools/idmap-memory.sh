#!/usr/bin/env bash
# idmap-memory.sh - measures what the id map (ftsync:{P}:ids, README "The id map") costs in
# Redis: fills a hash with N entries shaped as extract writes them (field: canonical extended
# JSON of an ObjectId _id, value: an integer index id as decimal text) and prints MEMORY USAGE
# of the hash (all of it, SAMPLES 0) and the cost per document.
#
#   test/tools/idmap-memory.sh [redis-cli arguments...]   e.g. -p 6399
# Uses the key ftsync:{idmap-memory}:ids of the server it is given, and deletes it afterwards.
set -euo pipefail
count=${IDMAP_MEMORY_COUNT:-100000}
key='ftsync:{idmap-memory}:ids'
cli=(redis-cli "$@")
"${cli[@]}" DEL "$key" >/dev/null
# One HSET per 1000 entries, generated in Lua on the server (no client round trips).
"${cli[@]}" EVAL "
for i = 0, tonumber(ARGV[1]) - 1, 1000 do
  local args = {}
  for j = i, math.min(i + 999, tonumber(ARGV[1]) - 1) do
    args[#args + 1] = string.format('{ \"\$oid\" : \"65a0%020x\" }', j)
    args[#args + 1] = tostring(1000000 + j)
  end
  redis.call('HSET', KEYS[1], unpack(args))
end
return redis.call('HLEN', KEYS[1])" 1 "$key" "$count" >/dev/null
bytes=$("${cli[@]}" MEMORY USAGE "$key" SAMPLES 0)
entries=$("${cli[@]}" HLEN "$key")
encoding=$("${cli[@]}" OBJECT ENCODING "$key")
version=$("${cli[@]}" INFO server | sed -n 's/^redis_version:\([^\r]*\).*/\1/p')
"${cli[@]}" DEL "$key" >/dev/null
echo "redis $version: $entries entries, encoding $encoding, MEMORY USAGE $bytes bytes," \
     "$((bytes / entries)) bytes per document"
