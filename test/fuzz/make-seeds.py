#!/usr/bin/python3
"""make-seeds.py - writes the seed corpora of test/fuzz/corpus/<target>/.

Run with Debian's python3 (its python3-pymongo provides the bson module), from anywhere:
    /usr/bin/python3 test/fuzz/make-seeds.py
Seeds are real examples: the recorded _bulk answers of test/fixtures/bulk/, the change events
and worker messages ftsync handles, the settings and URLs of the tests and README, the RESP
replies of test/unit/test_redis_group_reply.c. Each file is named seed-*; files named
crash-* or regress-* are inputs that once broke a target, kept as regression tests, and are
never written or removed here. Re-running rewrites the seeds with the same bytes.
"""
import datetime
import json
import os
import struct
import uuid

import bson
import bson.json_util
from bson.binary import Binary
from bson.code import Code
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, "seed-" + name), "wb") as out:
        out.write(data)


def resp(value):
    """RESP2 encoding of str/bytes (bulk), int, None (nil bulk), list (array)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(resp(v) for v in value)


TOKEN = {"_data": "8265A1B2C3000000012B022C0100296E5A1004A1B2C3D4E5F6471892A3B4C5D6E7F8A946645F696400646561B2C3D4E5F60718293A4B0004"}
OID = ObjectId("65a1b2c3d4e5f60718293a4b")
TS = Timestamp(1705095875, 1)


def document():
    return {
        "_id": OID,
        "name": "Half-Life ² \"Episode\"",
        "tags": ["fps", "valve", {"nested": [1, 2.5, None]}],
        "price": Decimal128("9.99"),
        "players": Int64(2**60),
        "small": Int64(42),
        "ratio": float("nan"),
        "released": datetime.datetime(2004, 11, 16, tzinfo=datetime.timezone.utc),
        "ancient": datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc),
        "bin": Binary(b"\x00\x01\xff", 0),
        "uuid": Binary(uuid.UUID("12345678-1234-5678-1234-567812345678").bytes, 4),
        "re": Regex("^a.*b$", "im"),
        "code": Code("function () { return 1; }"),
        "scoped": Code("x", {"x": 1}),
        "min": MinKey(),
        "max": MaxKey(),
        "ts": TS,
        "flag": True,
        "a": {"id": "custom-id", "b": "nested value"},
    }


def events():
    ns = {"db": "steam", "coll": "apps"}
    doc = document()
    common = {"_id": TOKEN, "clusterTime": TS, "ns": ns, "documentKey": {"_id": OID}}
    yield "insert", dict(common, operationType="insert", fullDocument=doc)
    yield "replace", dict(common, operationType="replace", fullDocument={"_id": OID, "name": "x"})
    yield "update", dict(common, operationType="update", fullDocument=doc,
                         updateDescription={"updatedFields": {"name": "y"}, "removedFields": []})
    yield "update-null", dict(common, operationType="update", fullDocument=None)
    yield "delete", dict(common, operationType="delete")
    yield "delete-preimage", dict(common, operationType="delete", documentKey={"_id": 7},
                                  fullDocumentBeforeChange={"_id": 7, "a": {"id": 99}})
    yield "drop", {"_id": TOKEN, "clusterTime": TS, "operationType": "drop", "ns": ns}
    yield "invalidate", {"_id": TOKEN, "clusterTime": TS, "operationType": "invalidate"}
    yield "rename", {"_id": TOKEN, "clusterTime": TS, "operationType": "rename", "ns": ns,
                     "to": {"db": "steam", "coll": "apps2"}}
    yield "id-types", dict(common, operationType="insert", documentKey={"_id": 424242},
                           fullDocument={"_id": 424242, "v": 1})
    yield "deep", dict(common, operationType="insert",
                       fullDocument={"_id": "deep", "d": nest(40)})


def nest(depth):
    value = "leaf"
    for _ in range(depth):
        value = {"x": [value]}
    return value


def bson_transform():
    for name, event in events():
        write("bson_transform", "event-" + name, bson.encode(event))
    write("bson_transform", "document", bson.encode(document()))
    # Raw BSON the Python encoder will not write: a string with invalid UTF-8, an embedded
    # document whose length overruns, a code-with-scope.
    bad_utf8 = b"\x02s\x00" + struct.pack("<i", 4) + b"a\xffb\x00"
    write("bson_transform", "invalid-utf8",
          struct.pack("<i", 4 + len(bad_utf8) + 1) + bad_utf8 + b"\x00")
    overrun = b"\x03d\x00" + struct.pack("<i", 200) + b"\x00"
    write("bson_transform", "overrun", struct.pack("<i", 4 + len(overrun) + 1) + overrun + b"\x00")


STATUS = [200, 201, 400, 404, 408, 409, 413, 429, 500, 503, 0, 302, 599, 100, -1, 999]
# HTTP status of each recorded answer (test/fixtures/bulk/README.md).
FIXTURE_STATUS = {"request-400": 400, "request-413": 413, "request-429": 429,
                  "request-503": 503}


def bulk_result():
    directory = os.path.join(ROOT, "test", "fixtures", "bulk")
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            body = f.read()
        status = 200
        for suffix, code in FIXTURE_STATUS.items():
            if suffix in name:
                status = code
        ops = b""
        try:
            for item in json.loads(body).get("items", []):
                ops += b"d" if "delete" in item else b"i"
        except ValueError:
            ops = b"iid"  # truncated answers: the batch they were cut from
        if not ops:
            ops = b"i"
        write("bulk_result", name[:-5], bytes([STATUS.index(status), len(ops)]) + ops + body)


def entry(**fields):
    order = ["op", "id", "version", "ns", "ts", "origin", "body"]
    items = []
    for key in order:
        if key in fields:
            items += [key.encode(), fields[key].encode() if isinstance(fields[key], str) else fields[key]]
    return items


def stream_entry():
    entries = {
        "index": entry(op="index", id="65a1b2c3d4e5f60718293a4b", version="7323865906312822785",
                       ns="steam.apps", ts="1705095875.1", origin="change",
                       body='{"name":"Half-Life","tags":["fps"]}'),
        "delete": entry(op="delete", id="app-7", version="7323865906312822786", ns="steam.apps",
                        ts="1705095875.2", origin="change"),
        "drop": entry(op="drop", version="7323865906312822787", ns="steam.apps",
                      ts="1705095875.3", origin="change"),
        "sweep": entry(op="sweep", version="7323865906312822788", ns="steam.apps",
                       ts="1705095875.4", origin="snapshot"),
        "snapshot": entry(op="index", id="1", version="1", ns="d.c", ts="0.1",
                          origin="snapshot", body="{}"),
        "binary-id": entry(op="delete", id=b"a\x00b", version="5", ns="d.c", ts="0.5",
                           origin="change"),
    }
    for name, items in entries.items():
        write("stream_entry", "items-" + name, b"\x00" + b"\x00".join(items))
    # XREADGROUP (mode 1), history read (mode 3), XAUTOCLAIM (mode 5) replies.
    read = [["ftsync:{p}:stream", [["1705095875000-0", entries["index"]],
                                   ["1705095875000-1", entries["delete"]],
                                   ["1705095875000-2", None]]]]
    write("stream_entry", "resp-read", b"\x01" + resp(read))
    pending = [["1705095875000-0", "loader-1", 1000, 3], ["1705095875000-1", "loader-1", 5, 1]]
    write("stream_entry", "resp-history", b"\x03" + resp(read) + resp(pending))
    claim = ["0-0", [["1705095875000-0", entries["drop"]]], ["1705095875000-9"]]
    write("stream_entry", "resp-claim", b"\x05" + resp(claim))
    write("stream_entry", "resp-claim-62", b"\x05" + resp(["1-0", [["1-0", None]]]))
    write("stream_entry", "resp-nil", b"\x01*-1\r\n")
    # The replies test/unit/test_redis_group_reply.c reads.
    write("stream_entry", "resp-unit",
          b"\x01*1\r\n*2\r\n$1\r\ns\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$2\r\nop\r\n$5\r\nindex\r\n"
          b"$2\r\nns\r\n$4\r\nd.c1\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nv\r\n$3\r\na\x00b\r\n")


def settings():
    envs = {
        "minimal": "",
        "full": "\n".join([
            "FTSYNC_MONGO_URI=mongodb://user:s3cret@127.0.0.1:27017,127.0.0.1:27018/?replicaSet=rs0&authSource=admin",
            "FTSYNC_REDIS_URL=redis://ftsync:p%40ss@127.0.0.1:6379/2",
            "FTSYNC_ES_URL=https://elastic:pw@search.example:9200/prefix",
            "FTSYNC_ES_INDEX=apps-v2",
            "FTSYNC_FIELDS=name,tags,a.b",
            "FTSYNC_ID_FIELD=a.id",
            "FTSYNC_BATCH_MAX_BYTES=5MiB",
            "FTSYNC_RETRY_BASE_MS=100",
            "FTSYNC_RETRY_MAX_MS=30000",
            "FTSYNC_LOG_LEVEL=debug",
            "FTSYNC_LOG_FORMAT=json",
            "FTSYNC_MONGO_SCOPE=database",
            "FTSYNC_ADMIN_ADDR=127.0.0.1:9100",
            "FTSYNC_UNKNOWN=1",
        ]),
        "bad": "\n".join([
            "FTSYNC_FIELDS=_id,name", "FTSYNC_ID_FIELD=.", "FTSYNC_BATCH_MAX_BYTES=12 parsecs",
            "FTSYNC_REDIS_URL=rediss://host", "FTSYNC_ES_INDEX=_all", "FTSYNC_RETRY_BASE_MS=-1",
        ]),
    }
    for index, (name, text) in enumerate(envs.items()):
        write("settings", "env-" + name, bytes([index * 4]) + text.encode())
    urls = {
        1: ["redis://127.0.0.1:6379/0", "redis://user:p%40ss@[::1]:6380/3",
            "redis://:secret@host", "redis://host:99999/0", "rediss://host"],
        2: ["mongodb://127.0.0.1:27017/?replicaSet=rs0", "mongodb://u:p%2Fw@h1,h2/db?authSource=admin",
            "mongodb+srv://cluster.example.net/", "mongodb://h/?unknownOption=1"],
        3: ["http://127.0.0.1:9200", "https://elastic:secret@es.example:9243/base/",
            "ftp://nope", "http://[::1]:9200/"],
    }
    for mode, texts in urls.items():
        for index, text in enumerate(texts):
            write("settings", "url-%d-%d" % (mode, index), bytes([mode]) + text.encode())


def frame():
    token = json.dumps(TOKEN)
    messages = [
        {"t": "event", "ev": dict(next(events())[1]), "tok": token, "kind": "resume",
         "careful": False},
        {"t": "snap", "doc": {"_id": OID, "name": "x"}, "ns": "steam.apps", "started": TS,
         "last_id": '{"$oid":"65a1b2c3d4e5f60718293a4b"}', "queued": Int64(12), "careful": True},
        {"t": "token", "tok": token, "kind": "start_after", "ct": TS},
        {"t": "sweep", "ns": "steam.apps", "started": TS},
    ]
    stream = b"".join(bson.encode(m) for m in messages)
    write("frame", "messages-whole", b"\x00" + stream)
    write("frame", "messages-chunks-7", b"\x07" + stream)
    write("frame", "messages-socket", b"\x40" + stream)
    write("frame", "messages-socket-chunks-3", b"\x43" + stream)
    write("frame", "cut", b"\x00" + stream[:-9])
    write("frame", "bad-length", b"\x00" + struct.pack("<i", 3) + b"\x00")


def resume_token():
    write("resume_token", "token", b"\x00" + json.dumps(TOKEN).encode())
    write("resume_token", "token-canonical",
          b"\x00" + bson.json_util.dumps(TOKEN, json_options=bson.json_util.CANONICAL_JSON_OPTIONS).encode())
    write("resume_token", "token-old", b'\x00{"_data": {"$binary": {"base64": "gmWhssM=", "subType": "00"}}}')
    write("resume_token", "token-not-object", b'\x00"8265A1"')
    write("resume_token", "cluster-time", b"\x011705095875.1")
    write("resume_token", "cluster-time-max", b"\x014294967295.4294967295")
    write("resume_token", "kind", b"\x01start_after")
    token_hash = ["token", json.dumps(TOKEN), "kind", "resume", "cluster_time", "1705095875.1",
                  "updated_at", "1705095875123"]
    snapshot_hash = ["started_at", "1705095875.1", "last_id", '{"$oid":"65a1b2c3d4e5f60718293a4b"}',
                     "queued", "12", "updated_at", "1705095875123"]
    write("resume_token", "hash-token", b"\x02" + resp(token_hash) + resp([]))
    write("resume_token", "hash-snapshot", b"\x02" + resp([]) + resp(snapshot_hash))
    write("resume_token", "hash-both", b"\x02" + resp(token_hash) + resp(snapshot_hash))
    groups = [["name", "loaders", "consumers", 2, "pending", 3, "last-delivered-id", "1-0",
               "entries-read", 5, "lag", None]]
    write("resume_token", "backlog", b"\x02" + resp(12) + resp(groups))
    write("resume_token", "decimal", b"\x03\x067323865906312822785")
    write("resume_token", "decimal-overflow", b"\x03\x0618446744073709551616")


for make in (bson_transform, bulk_result, stream_entry, settings, frame, resume_token):
    make()
