#!/usr/bin/python3
"""double_conformance.py - the MongoDB replica-set double (test/double/) checked against
MongoDB's documented behaviour through a second, independent driver: Debian's pymongo 3.11
(python3-pymongo, run with /usr/bin/python3) and a current pymongo 4.x from PyPI (in the
virtual environment deploy/local/install-deps.sh creates); CTest runs it with both. Where the
two generations differ in API (NotMasterError became NotPrimaryError, parse_uri's option
names), the suite accepts either.

The same points as test_double_conformance.c (handshake and topology, CRUD, cursors, change
streams, bounded history, fail points, step-down), written again against pymongo so that a
behaviour libmongoc happens to tolerate cannot hide a deviation. Every test checks what a
MongoDB 6.0 replica set does, never the double's own choices: with FTSYNC_TEST_MONGO_URI set
nothing is started, each test works in a database of its own and turns the failCommand fail
point off again (such a server needs `--setParameter enableTestCommands=1`, and must be a
single-node replica set for the step-down test). The one thing a real server cannot be made to
do on demand (a history of a few events or bytes) is checked on the double with
--history-events / --history-bytes and, on a real server, through startAtOperationTime
Timestamp(1, 1), which any server rejects with the same error.

Each test starts a double of its own (`$FTSYNC_MONGO_DOUBLE --port 0 --verbose [args]`, ready
when it printed `ftsync-mongo-double ready port=<N>`), so fail points and step-downs cannot leak
into the next test; the double's stderr (its log of every command) goes to a scratch file whose
tail is printed when a test fails. Exit status: 0 when every test passed.
"""

import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import bson
import pymongo
from bson import SON, Int64, ObjectId, Timestamp
from pymongo import monitoring
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
)

# pymongo 3.12 renamed NotMasterError to NotPrimaryError and 4.0 dropped the old name; the
# suite runs with Debian's 3.11 and a current 4.x.
try:
    from pymongo.errors import NotPrimaryError
except ImportError:
    from pymongo.errors import NotMasterError as NotPrimaryError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

READY = re.compile(r"ftsync-mongo-double ready port=(\d+)")
READY_TIMEOUT_S = 10
STOP_TIMEOUT_S = 10
EVENT_TIMEOUT_S = 10
# maxAwaitTimeMS of most streams: short, so waiting for "no event" loops quickly.
STREAM_AWAIT_MS = 200

_counter = [0]


def unique_name(prefix):
    """A database name nobody else uses, even on a shared real server."""
    _counter[0] += 1
    return "%s_%d_%x_%d" % (prefix, os.getpid(), int(time.time()) & 0xFFFFFF, _counter[0])


class Recorder(monitoring.CommandListener):
    """Keeps (command name, batch length, cursor id, has postBatchResumeToken) of replies."""

    def __init__(self):
        self.on = False
        self.entries = []

    def start(self):
        self.entries = []
        self.on = True

    def started(self, event):
        pass

    def succeeded(self, event):
        if not self.on:
            return
        cursor = event.reply.get("cursor") if isinstance(event.reply, dict) else None
        batch = None
        if cursor:
            batch = cursor.get("firstBatch", cursor.get("nextBatch"))
        self.entries.append(
            (
                event.command_name,
                len(batch) if batch is not None else -1,
                cursor.get("id") if cursor else None,
                bool(cursor and "postBatchResumeToken" in cursor),
            )
        )

    def failed(self, event):
        if self.on:
            self.entries.append((event.command_name, -1, None, False))

    def names(self):
        return [entry[0] for entry in self.entries]


class Double:
    """A private ftsync-mongo-double, or the deployment FTSYNC_TEST_MONGO_URI names."""

    def __init__(self, extra_args=()):
        self.proc = None
        self.dir = None
        self.log_path = None
        self.external = bool(os.environ.get("FTSYNC_TEST_MONGO_URI"))
        if self.external:
            self.uri = os.environ["FTSYNC_TEST_MONGO_URI"]
            return
        binary = os.environ.get("FTSYNC_MONGO_DOUBLE")
        if not binary or not os.access(binary, os.X_OK):
            raise AssertionError(
                "FTSYNC_MONGO_DOUBLE must name the ftsync-mongo-double binary (got %r); "
                "ctest sets it" % binary
            )
        scratch = os.environ.get("FTSYNC_TESTBED_DIR") or tempfile.gettempdir()
        os.makedirs(scratch, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="mongo-double-py-", dir=scratch)
        self.log_path = os.path.join(self.dir, "stderr.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                # --verbose: the tail printed when a test fails shows the last commands.
                [binary, "--port", "0", "--verbose"] + list(extra_args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                # Die with us: a crashed test must not leave a server holding a port.
                preexec_fn=_die_with_parent,
            )
        port = self._read_ready_line()
        self.uri = "mongodb://127.0.0.1:%d/?replicaSet=rs0" % port

    def _read_ready_line(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail("no ready line within %d s" % READY_TIMEOUT_S)
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            byte = os.read(fd, 1)  # one at a time: nothing after the line may be consumed
            if not byte:
                self.proc.wait(1)
                self._fail(
                    "closed its stdout before the ready line (exit status %s)"
                    % self.proc.returncode
                )
            line += byte
        match = READY.fullmatch(line.decode("utf-8", "replace").rstrip("\n"))
        if not match:
            self._fail("printed %r instead of the ready line" % line)
        return int(match.group(1))

    def log_tail(self, lines=40):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as log:
            text = log.read().decode("utf-8", "replace")
        return "\n".join(line[:400] for line in text.splitlines()[-lines:])

    def _fail(self, problem):
        self.stop(check=False)
        raise AssertionError(
            "ftsync-mongo-double: %s\n---- last lines of %s ----\n%s\n---- end of log ----"
            % (problem, self.log_path, self.log_tail())
        )

    def stop(self, check=True):
        """SIGTERM, wait up to 10 s, then SIGKILL; with check, fail unless it stopped cleanly."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        died_early = proc.poll() is not None
        if not died_early:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
            killed = False
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed = True
        proc.stdout.close()
        if not check:
            return
        if died_early:
            self._fail("had exited (status %s) before it was stopped" % proc.returncode)
        if killed:
            self._fail("did not stop within %d s of SIGTERM; killed" % STOP_TIMEOUT_S)
        if proc.returncode not in (0, -signal.SIGTERM):
            self._fail("exited with status %s on SIGTERM" % proc.returncode)

    def remove(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: the kernel sends SIGKILL when the test process dies.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


class DoubleTest(unittest.TestCase):
    """A fresh double (or the external deployment), a client, and a database per test."""

    extra_args = ()

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        super().run(result)
        server = getattr(self, "server", None)
        if server is not None:
            if len(result.failures) + len(result.errors) > before and not server.external:
                sys.stderr.write(
                    "---- last lines of the double's stderr (%s) ----\n%s\n---- end ----\n"
                    % (server.log_path, server.log_tail())
                )
            server.remove()
        return result

    def setUp(self):
        self.server = Double(self.extra_args)
        # Whatever fails later (even in setUp), the double does not outlive the test; tearDown
        # stops it first and checks that it stopped cleanly.
        self.addCleanup(self.server.stop, False)
        self.recorder = Recorder()
        self.clients = []
        self.client = self.new_client(self.server.uri)
        self.db_name = unique_name("conformance")
        self.db = self.client[self.db_name]
        self.coll = self.db.apps
        self.extra_dbs = []
        self.streams = []
        self.used_fail_point = False

    def tearDown(self):
        for stream in self.streams:
            try:
                stream.close()
            except Exception:  # a stream of a stopped test may be broken; closing is best effort
                pass
        if self.server.external:
            if self.used_fail_point:
                self.client.admin.command(
                    SON([("configureFailPoint", "failCommand"), ("mode", "off")])
                )
            for name in [self.db_name] + self.extra_dbs:
                self.client.drop_database(name)
        for client in self.clients:
            client.close()
        self.server.stop()

    def new_client(self, uri, **kwargs):
        client = pymongo.MongoClient(
            uri,
            appname="ftsync-conformance-py",
            serverSelectionTimeoutMS=10000,
            event_listeners=[self.recorder],
            **kwargs
        )
        self.clients.append(client)
        return client

    # ---- helpers ----------------------------------------------------------------------------

    def command_fails(self, db, command, code):
        with self.assertRaises(OperationFailure) as raised:
            self.client[db].command(command)
        self.assertEqual(raised.exception.code, code, raised.exception.details)
        return raised.exception.details

    def ids(self, coll, filter=None, **kwargs):
        return [doc["_id"] for doc in coll.find(filter or {}, **kwargs)]

    def watch(self, target, pipeline=None, **kwargs):
        kwargs.setdefault("max_await_time_ms", STREAM_AWAIT_MS)
        stream = target.watch(pipeline or [], **kwargs)
        self.streams.append(stream)
        return stream

    def next_event(self, stream, timeout=EVENT_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = stream.try_next()
            if event is not None:
                return event
        self.fail("no change event within %s s" % timeout)

    def expect_no_event(self, stream, seconds=0.3):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            event = stream.try_next()
            self.assertIsNone(event, "unexpected change event %r" % (event,))

    def expect_stream_error(self, open_stream, code):
        """open_stream() opens a stream; it, or reading it, must fail with code."""
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        try:
            stream = open_stream()
            self.streams.append(stream)
            while time.monotonic() < deadline:
                event = stream.try_next()
                if event is not None:
                    self.fail("expected error %d, got the event %r" % (code, event))
        except OperationFailure as error:
            self.assertEqual(error.code, code, error.details)
            return error
        self.fail("expected error %d, got no error within %d s" % (code, EVENT_TIMEOUT_S))

    def check_event(self, event, operation_type):
        """Fields every event has: _id {_data: hex string}, operationType, clusterTime
        (Timestamp), wallTime (date, new in 6.0).
        https://www.mongodb.com/docs/v6.0/reference/change-events/"""
        self.assertEqual(event["operationType"], operation_type, event)
        self.assertEqual(list(event["_id"].keys()), ["_data"])
        self.assertRegex(event["_id"]["_data"], r"^[0-9A-Fa-f]+$")
        self.assertIsInstance(event["clusterTime"], Timestamp)
        self.assertIn("wallTime", event)
        self.assertTrue(hasattr(event["wallTime"], "year"), event["wallTime"])

    def fail_point(self, mode, data=None):
        self.used_fail_point = True
        command = SON([("configureFailPoint", "failCommand"), ("mode", mode)])
        if data is not None:
            command["data"] = data
        self.client.admin.command(command)

    def insert_apps(self):
        for i in range(1, 11):
            self.coll.insert_one(
                {
                    "_id": i,
                    "id": i,
                    "name": "app-%02d" % i,
                    "type": "dlc" if i % 3 == 0 else "game",
                    "is_free": bool(i % 2),
                    "score": (i * 7) % 10,
                    "prices": {"us": {"currency": "USD", "final": i * 100}},
                    "developers": ["Studio %d" % i],
                }
            )

    def set_name(self):
        from pymongo.uri_parser import parse_uri

        # pymongo 3.11 lower-cases the option names; 4.x keeps the URI's spelling.
        options = parse_uri(self.server.uri)["options"]
        return {name.lower(): value for name, value in options.items()}["replicaset"]


class HandshakeTest(DoubleTest):
    def test_hello_fields(self):
        # https://www.mongodb.com/docs/v6.0/reference/command/hello/
        reply = self.client.admin.command("hello")
        self.assertIs(reply["isWritablePrimary"], True)
        self.assertIs(reply["secondary"], False)
        self.assertEqual(reply["setName"], self.set_name())
        self.assertEqual(reply["primary"], reply["me"])
        self.assertIn(reply["me"], reply["hosts"])
        self.assertEqual(reply["minWireVersion"], 0)
        self.assertGreaterEqual(reply["maxWireVersion"], 17)
        self.assertEqual(reply["maxBsonObjectSize"], 16 * 1024 * 1024)
        self.assertEqual(reply["maxMessageSizeBytes"], 48000000)
        self.assertEqual(reply["maxWriteBatchSize"], 100000)
        self.assertEqual(reply["logicalSessionTimeoutMinutes"], 30)
        self.assertIs(reply["readOnly"], False)
        # 4.4+: the version of this member's view of the topology, for awaitable hello.
        self.assertIsInstance(reply["topologyVersion"]["processId"], ObjectId)
        self.assertIsInstance(reply["topologyVersion"]["counter"], Int64)
        self.assertTrue(hasattr(reply["localTime"], "year"))
        self.assertEqual(reply["ok"], 1)
        self.assertIsInstance(reply["operationTime"], Timestamp)
        self.assertIsInstance(reply["$clusterTime"]["clusterTime"], Timestamp)
        self.assertIsInstance(reply["$clusterTime"]["signature"], dict)

    def test_is_master_legacy_fields(self):
        # pymongo 3.11 opens every connection with OP_QUERY isMaster; this one is OP_MSG.
        reply = self.client.admin.command("isMaster")
        self.assertIs(reply["ismaster"], True)
        self.assertIs(reply["secondary"], False)
        self.assertEqual(reply["setName"], self.set_name())
        self.assertGreaterEqual(reply["maxWireVersion"], 17)

    def test_legacy_op_query_handshake(self):
        # Drivers open a connection with hello (or isMaster) in a legacy OP_QUERY on
        # admin.$cmd, answered with an OP_REPLY; 6.0 still accepts exactly those commands that
        # way. Done here by hand, byte by byte.
        # https://www.mongodb.com/docs/v6.0/reference/mongodb-wire-protocol/#op_query
        from pymongo.uri_parser import parse_uri

        host, port = parse_uri(self.server.uri)["nodelist"][0]
        with socket.create_connection((host, port), timeout=10) as sock:
            for request_id, command in ((7, "isMaster"), (8, "hello")):
                query = bson.encode(SON([(command, 1)]))
                body = struct.pack("<i", 0) + b"admin.$cmd\0" + struct.pack("<ii", 0, -1) + query
                sock.sendall(struct.pack("<iiii", 16 + len(body), request_id, 0, 2004) + body)
                header = self._read_exactly(sock, 16)
                length, _, response_to, op_code = struct.unpack("<iiii", header)
                self.assertEqual((response_to, op_code), (request_id, 1))  # 1: OP_REPLY
                reply_body = self._read_exactly(sock, length - 16)
                _, _, _, number_returned = struct.unpack("<iqii", reply_body[:20])
                self.assertEqual(number_returned, 1)
                reply = bson.decode(reply_body[20:])
                self.assertEqual(reply["ok"], 1)
                self.assertIs(
                    reply["ismaster" if command == "isMaster" else "isWritablePrimary"], True
                )
                self.assertGreaterEqual(reply["maxWireVersion"], 17)
                self.assertEqual(reply["setName"], self.set_name())

    @staticmethod
    def _read_exactly(sock, length):
        data = b""
        while len(data) < length:
            chunk = sock.recv(length - len(data))
            if not chunk:
                raise AssertionError("the server closed the connection mid-reply")
            data += chunk
        return data

    def test_client_sees_replica_set_primary(self):
        self.client.admin.command("ping")
        self.assertIsNotNone(self.client.primary)
        self.assertTrue(self.client.is_primary)
        # pymongo 3.11 has no public topology description (4.0 added one).
        description = self.client._topology.description
        self.assertEqual(description.topology_type_name, "ReplicaSetWithPrimary")
        servers = description.server_descriptions()
        self.assertEqual(
            [s.server_type_name for s in servers.values() if s.server_type_name == "RSPrimary"],
            ["RSPrimary"],
        )

    def test_ping_and_build_info(self):
        self.assertEqual(self.client.admin.command("ping")["ok"], 1)
        info = self.client.admin.command("buildInfo")
        parts = info["versionArray"]
        self.assertTrue(info["version"].startswith("%d.%d.%d" % tuple(parts[:3])), info)
        self.assertGreaterEqual(parts[0], 6)
        self.assertEqual(info["maxBsonObjectSize"], 16 * 1024 * 1024)
        if info["version"].startswith("6.0."):
            self.assertEqual(self.client.admin.command("hello")["maxWireVersion"], 17)

    def test_list_collections_and_databases(self):
        self.db.command("create", "made")
        self.coll.insert_one({"_id": 1})
        reply = self.db.command("listCollections")
        self.assertEqual(reply["cursor"]["ns"], "%s.$cmd.listCollections" % self.db_name)
        entries = reply["cursor"]["firstBatch"]
        self.assertEqual(sorted(e["name"] for e in entries), ["apps", "made"])
        self.assertEqual({e["type"] for e in entries}, {"collection"})
        self.assertEqual(sorted(self.db.list_collection_names()), ["apps", "made"])
        reply = self.client.admin.command("listDatabases")
        mine = [d for d in reply["databases"] if d["name"] == self.db_name]
        self.assertEqual(len(mine), 1)
        self.assertIsInstance(mine[0]["sizeOnDisk"], (int, float))
        self.assertIs(mine[0]["empty"], False)
        self.assertIn("totalSize", reply)
        reply = self.client.admin.command("listDatabases", nameOnly=True)
        for entry in reply["databases"]:
            self.assertEqual(list(entry.keys()), ["name"])
        self.assertIn(self.db_name, self.client.list_database_names())

    def test_sessions_and_concerns_accepted(self):
        coll = self.coll.with_options(
            write_concern=WriteConcern("majority", wtimeout=5000),
            read_concern=ReadConcern("majority"),
        )
        with self.client.start_session() as session:
            coll.insert_one({"_id": 1, "name": "Portal"}, session=session)
            self.assertEqual(list(coll.find({}, session=session)), [{"_id": 1, "name": "Portal"}])
            reply = self.client.admin.command("endSessions", [session.session_id])
            self.assertEqual(reply["ok"], 1)


class CrudTest(DoubleTest):
    def test_find_equality_and_dotted(self):
        self.insert_apps()
        self.assertEqual(self.ids(self.coll, {"type": "dlc"}, sort=[("_id", 1)]), [3, 6, 9])
        self.assertEqual(self.ids(self.coll, {"_id": 4}), [4])
        self.assertEqual(
            self.ids(self.coll, {"is_free": False, "type": "game"}, sort=[("_id", 1)]),
            [2, 4, 8, 10],
        )
        self.assertEqual(self.ids(self.coll, {"prices.us.final": 500}), [5])
        self.assertEqual(self.ids(self.coll, {"prices.eu.final": 500}), [])
        self.assertEqual(
            self.coll.find_one({"_id": 2}),
            {
                "_id": 2,
                "id": 2,
                "name": "app-02",
                "type": "game",
                "is_free": False,
                "score": 4,
                "prices": {"us": {"currency": "USD", "final": 200}},
                "developers": ["Studio 2"],
            },
        )

    def test_find_in_and_ranges(self):
        self.insert_apps()
        by_id = [("_id", 1)]
        self.assertEqual(self.ids(self.coll, {"_id": {"$in": [2, 4, 99]}}, sort=by_id), [2, 4])
        self.assertEqual(
            self.ids(self.coll, {"type": {"$in": ["dlc", "demo"]}}, sort=by_id), [3, 6, 9]
        )
        self.assertEqual(self.ids(self.coll, {"_id": {"$gt": 3, "$lte": 6}}, sort=by_id), [4, 5, 6])
        self.assertEqual(self.ids(self.coll, {"_id": {"$gte": 9}}, sort=by_id), [9, 10])
        self.assertEqual(self.ids(self.coll, {"_id": {"$lt": 3}}, sort=by_id), [1, 2])
        self.assertEqual(
            self.ids(self.coll, {"prices.us.final": {"$gte": 800}}, sort=by_id), [8, 9, 10]
        )
        self.assertEqual(
            self.ids(self.coll, {"score": {"$gt": 2, "$lt": 6}}, sort=by_id), [2, 5, 9]
        )
        self.assertEqual(self.ids(self.coll, {"name": {"$gte": "app-09"}}, sort=by_id), [9, 10])

    def test_find_sort_limit_skip_projection(self):
        self.insert_apps()
        self.assertEqual(self.ids(self.coll, sort=[("_id", -1)]), list(range(10, 0, -1)))
        self.assertEqual(self.ids(self.coll, sort=[("_id", -1)], limit=3, skip=1), [9, 8, 7])
        self.assertEqual(self.ids(self.coll, sort=[("_id", 1)], skip=20), [])
        self.assertEqual(self.ids(self.coll, sort=[("score", 1)]), [10, 3, 6, 9, 2, 5, 8, 1, 4, 7])
        self.assertEqual(
            self.ids(self.coll, {"type": "game"}, sort=[("score", -1)], limit=2), [7, 4]
        )
        self.assertEqual(self.ids(self.coll, sort=[("name", -1)], limit=2), [10, 9])
        self.assertEqual(self.coll.find_one({"_id": 3}, {"name": 1}), {"_id": 3, "name": "app-03"})
        self.assertEqual(
            self.coll.find_one({"_id": 3}, {"_id": 0, "name": 1, "prices.us.final": 1}),
            {"name": "app-03", "prices": {"us": {"final": 300}}},
        )
        self.assertEqual(
            self.coll.find_one(
                {"_id": 3}, {"prices": 0, "developers": 0, "score": 0, "is_free": 0, "id": 0}
            ),
            {"_id": 3, "name": "app-03", "type": "dlc"},
        )

    def test_find_batches_and_get_more(self):
        # https://www.mongodb.com/docs/v6.0/reference/command/getMore/
        self.insert_apps()
        self.recorder.start()
        self.assertEqual(self.ids(self.coll, sort=[("_id", 1)], batch_size=3), list(range(1, 11)))
        self.recorder.on = False
        seen = [
            (n, b, c == 0) for (n, b, c, _) in self.recorder.entries if n in ("find", "getMore")
        ]
        self.assertEqual(
            seen,
            [
                ("find", 3, False),
                ("getMore", 3, False),
                ("getMore", 3, False),
                ("getMore", 1, True),
            ],
        )

    def test_kill_cursors(self):
        # https://www.mongodb.com/docs/v6.0/reference/command/killCursors/
        self.insert_apps()
        reply = self.db.command(SON([("find", "apps"), ("batchSize", 2)]))
        self.assertEqual(len(reply["cursor"]["firstBatch"]), 2)
        self.assertEqual(reply["cursor"]["ns"], "%s.apps" % self.db_name)
        cursor_id = reply["cursor"]["id"]
        self.assertNotEqual(cursor_id, 0)
        more = SON([("getMore", Int64(cursor_id)), ("collection", "apps"), ("batchSize", 3)])
        reply = self.db.command(more)
        self.assertEqual(len(reply["cursor"]["nextBatch"]), 3)
        self.assertEqual(reply["cursor"]["id"], cursor_id)
        kill = SON([("killCursors", "apps"), ("cursors", [Int64(cursor_id)])])
        reply = self.db.command(kill)
        self.assertEqual(reply["cursorsKilled"], [cursor_id])
        self.assertEqual(reply["cursorsNotFound"], [])
        self.assertEqual(reply["cursorsAlive"], [])
        self.assertEqual(reply["cursorsUnknown"], [])
        self.command_fails(self.db_name, more, 43)
        reply = self.db.command(kill)
        self.assertEqual(reply["cursorsKilled"], [])
        self.assertEqual(reply["cursorsNotFound"], [cursor_id])

    def test_update_set_unset_inc(self):
        # https://www.mongodb.com/docs/v6.0/reference/operator/update/
        self.coll.insert_one(
            {
                "_id": 1,
                "name": "Half-Life",
                "short_description": "A crowbar.",
                "recommendations": {"total": 10},
                "prices": {"us": {"final": 999}},
            }
        )
        result = self.coll.update_one(
            {"_id": 1},
            {
                "$set": {
                    "name": "Half-Life 2",
                    "prices.us.final": 499,
                    "prices.eu": {"final": 599},
                    "is_free": False,
                },
                "$unset": {"short_description": ""},
                "$inc": {"recommendations.total": 5, "views": 3},
            },
        )
        self.assertEqual((result.matched_count, result.modified_count), (1, 1))
        self.assertIsNone(result.upserted_id)
        self.assertEqual(
            self.coll.find_one({"_id": 1}),
            {
                "_id": 1,
                "name": "Half-Life 2",
                "recommendations": {"total": 15},
                "prices": {"us": {"final": 499}, "eu": {"final": 599}},
                "is_free": False,
                "views": 3,
            },
        )
        result = self.coll.update_one({"_id": 2}, {"$set": {"name": "x"}})
        self.assertEqual((result.matched_count, result.modified_count), (0, 0))
        self.assertEqual(self.ids(self.coll), [1])

    def test_update_replacement_and_upsert(self):
        self.coll.insert_one({"_id": 1, "name": "Old", "type": "game", "developers": ["A"]})
        result = self.coll.replace_one({"_id": 1}, {"name": "New", "is_free": True})
        self.assertEqual((result.matched_count, result.modified_count), (1, 1))
        self.assertEqual(self.coll.find_one({"_id": 1}), {"_id": 1, "name": "New", "is_free": True})
        result = self.coll.update_one({"_id": 42}, {"$set": {"name": "Upserted"}}, upsert=True)
        self.assertEqual((result.matched_count, result.modified_count), (0, 0))
        self.assertEqual(result.upserted_id, 42)
        self.assertEqual(self.coll.find_one({"_id": 42}), {"_id": 42, "name": "Upserted"})
        result = self.coll.replace_one({"_id": 43}, {"name": "Replaced in"}, upsert=True)
        self.assertEqual(result.upserted_id, 43)
        self.assertEqual(self.coll.find_one({"_id": 43}), {"_id": 43, "name": "Replaced in"})
        result = self.coll.update_one({"_id": 42}, {"$set": {"name": "Again"}}, upsert=True)
        self.assertEqual(result.matched_count, 1)
        self.assertIsNone(result.upserted_id)
        self.assertEqual(self.ids(self.coll, sort=[("_id", 1)]), [1, 42, 43])

    def test_update_multi(self):
        self.insert_apps()
        result = self.coll.update_many({"type": "dlc"}, {"$set": {"flag": True}})
        self.assertEqual((result.matched_count, result.modified_count), (3, 3))
        self.assertEqual(self.ids(self.coll, {"flag": True}, sort=[("_id", 1)]), [3, 6, 9])
        result = self.coll.update_one({"type": "game"}, {"$set": {"single": True}})
        self.assertEqual((result.matched_count, result.modified_count), (1, 1))
        single = self.ids(self.coll, {"single": True})
        self.assertEqual(len(single), 1)
        self.assertEqual(self.coll.find_one({"_id": single[0]})["type"], "game")
        reply = self.db.command(
            SON(
                [
                    ("update", "apps"),
                    (
                        "updates",
                        [{"q": {"_id": {"$gt": 8}}, "u": {"$inc": {"score": 100}}, "multi": True}],
                    ),
                ]
            )
        )
        self.assertEqual((reply["n"], reply["nModified"]), (2, 2))
        reply = self.db.command(
            SON(
                [
                    ("update", "apps"),
                    ("updates", [{"q": {"_id": 1}, "u": {"$set": {"name": "app-01"}}}]),
                ]
            )
        )
        self.assertEqual((reply["n"], reply["nModified"]), (1, 0))

    def test_delete_one_and_many(self):
        self.insert_apps()
        self.assertEqual(self.coll.delete_one({"type": "dlc"}).deleted_count, 1)
        self.assertEqual(self.coll.delete_many({"type": "dlc"}).deleted_count, 2)
        self.assertEqual(self.coll.delete_one({"_id": 3}).deleted_count, 0)
        self.assertEqual(self.ids(self.coll, sort=[("_id", 1)]), [1, 2, 4, 5, 7, 8, 10])
        self.assertEqual(self.coll.delete_many({"_id": {"$in": [1, 2, 99]}}).deleted_count, 2)
        self.assertEqual(self.coll.delete_many({}).deleted_count, 5)
        self.assertEqual(self.ids(self.coll), [])

    def test_count_and_aggregate_count(self):
        # https://www.mongodb.com/docs/v6.0/reference/operator/aggregation/count/
        self.insert_apps()
        self.assertEqual(self.db.command("count", "apps")["n"], 10)
        self.assertEqual(self.db.command("count", "apps", query={"type": "dlc"})["n"], 3)
        self.assertEqual(self.db.command("count", "nothing_here")["n"], 0)
        self.assertEqual(
            list(
                self.coll.aggregate(
                    [{"$match": {"type": "game", "_id": {"$gt": 2}}}, {"$count": "games"}]
                )
            ),
            [{"games": 5}],
        )
        self.assertEqual(
            list(self.coll.aggregate([{"$match": {"type": "nope"}}, {"$count": "n"}])), []
        )
        self.assertEqual([d["_id"] for d in self.coll.aggregate([{"$match": {"_id": 7}}])], [7])

    def test_create_rename_drop(self):
        # https://www.mongodb.com/docs/v6.0/reference/command/renameCollection/
        self.db.command("create", "fresh")
        self.command_fails(self.db_name, SON([("create", "fresh")]), 48)
        self.db.src.insert_many([{"_id": i} for i in (1, 2, 3)])
        self.client.admin.command(
            SON([("renameCollection", "%s.src" % self.db_name), ("to", "%s.dst" % self.db_name)])
        )
        self.assertEqual(self.ids(self.db.dst, sort=[("_id", 1)]), [1, 2, 3])
        self.assertEqual(self.ids(self.db.src), [])
        with self.assertRaises(OperationFailure) as raised:
            self.client.admin.command(
                SON(
                    [
                        ("renameCollection", "%s.dst" % self.db_name),
                        ("to", "%s.fresh" % self.db_name),
                    ]
                )
            )
        self.assertEqual(raised.exception.code, 48)
        self.client.admin.command(
            SON(
                [
                    ("renameCollection", "%s.dst" % self.db_name),
                    ("to", "%s.fresh" % self.db_name),
                    ("dropTarget", True),
                ]
            )
        )
        self.assertEqual(self.ids(self.db.fresh, sort=[("_id", 1)]), [1, 2, 3])
        self.assertEqual(self.db.list_collection_names(), ["fresh"])
        self.db.fresh.drop()
        self.assertEqual(self.db.list_collection_names(), [])
        self.coll.insert_one({"_id": 1})
        self.db.command("dropDatabase")
        self.assertEqual(self.ids(self.coll), [])
        self.assertNotIn(self.db_name, self.client.list_database_names())

    def test_duplicate_key(self):
        # https://www.mongodb.com/docs/v6.0/reference/command/insert/
        self.coll.insert_one({"_id": 1, "name": "first"})
        with self.assertRaises(DuplicateKeyError) as raised:
            self.coll.insert_one({"_id": 1, "name": "second"})
        self.assertEqual(raised.exception.code, 11000)
        with self.assertRaises(BulkWriteError) as raised:
            self.coll.insert_many([{"_id": 4}, {"_id": 1}, {"_id": 5}])
        details = raised.exception.details
        self.assertEqual(details["nInserted"], 1)
        self.assertEqual([(e["index"], e["code"]) for e in details["writeErrors"]], [(1, 11000)])
        self.assertEqual(self.ids(self.coll, sort=[("_id", 1)]), [1, 4])
        with self.assertRaises(BulkWriteError) as raised:
            self.coll.insert_many([{"_id": 6}, {"_id": 1}, {"_id": 7}], ordered=False)
        self.assertEqual(raised.exception.details["nInserted"], 2)
        self.assertEqual(self.ids(self.coll, sort=[("_id", 1)]), [1, 4, 6, 7])
        self.assertEqual(self.coll.find_one({"_id": 1}), {"_id": 1, "name": "first"})
        reply = self.db.command(
            SON([("insert", "apps"), ("documents", [{"_id": 1}, {"_id": 8}]), ("ordered", False)])
        )
        self.assertEqual((reply["ok"], reply["n"]), (1, 1))
        self.assertEqual([(e["index"], e["code"]) for e in reply["writeErrors"]], [(0, 11000)])
        self.assertIsInstance(reply["writeErrors"][0]["errmsg"], str)

    def test_unknown_command(self):
        details = self.command_fails("admin", SON([("frobnicateTheWidgets", 1)]), 59)
        self.assertEqual(details["codeName"], "CommandNotFound")
        self.assertEqual(details["ok"], 0)
        details = self.command_fails(self.db_name, SON([("noSuchCommand", "apps")]), 59)
        self.assertEqual(details["codeName"], "CommandNotFound")


class ChangeStreamTest(DoubleTest):
    def test_event_shapes(self):
        # https://www.mongodb.com/docs/v6.0/reference/change-events/
        stream = self.watch(self.coll)
        ns = {"db": self.db_name, "coll": "apps"}
        doc = {
            "_id": 570,
            "name": "Dota 2",
            "short_description": "MOBA",
            "recommendations": {"total": 10},
            "prices": {"us": {"final": 0}},
        }
        self.coll.insert_one(dict(doc))
        self.coll.update_one(
            {"_id": 570},
            {
                "$set": {"name": "Dota 2 Reborn", "prices.us.final": 99},
                "$unset": {"short_description": ""},
                "$inc": {"recommendations.total": 2},
            },
        )
        self.coll.replace_one({"_id": 570}, {"name": "Dota 3", "type": "game"})
        self.coll.delete_one({"_id": 570})

        event = self.next_event(stream)
        self.check_event(event, "insert")
        self.assertEqual(
            sorted(event),
            [
                "_id",
                "clusterTime",
                "documentKey",
                "fullDocument",
                "ns",
                "operationType",
                "wallTime",
            ],
        )
        self.assertEqual(event["ns"], ns)
        self.assertEqual(event["documentKey"], {"_id": 570})
        self.assertEqual(event["fullDocument"], doc)

        event = self.next_event(stream)
        self.check_event(event, "update")
        self.assertEqual(
            sorted(event),
            [
                "_id",
                "clusterTime",
                "documentKey",
                "ns",
                "operationType",
                "updateDescription",
                "wallTime",
            ],
        )
        self.assertEqual(event["documentKey"], {"_id": 570})
        self.assertEqual(
            event["updateDescription"],
            {
                "updatedFields": {
                    "name": "Dota 2 Reborn",
                    "prices.us.final": 99,
                    "recommendations.total": 12,
                },
                "removedFields": ["short_description"],
                "truncatedArrays": [],
            },
        )

        event = self.next_event(stream)
        self.check_event(event, "replace")
        self.assertEqual(
            sorted(event),
            [
                "_id",
                "clusterTime",
                "documentKey",
                "fullDocument",
                "ns",
                "operationType",
                "wallTime",
            ],
        )
        self.assertEqual(event["fullDocument"], {"_id": 570, "name": "Dota 3", "type": "game"})

        event = self.next_event(stream)
        self.check_event(event, "delete")
        self.assertEqual(
            sorted(event), ["_id", "clusterTime", "documentKey", "ns", "operationType", "wallTime"]
        )
        self.assertEqual(event["documentKey"], {"_id": 570})
        self.assertEqual(event["ns"], ns)
        self.expect_no_event(stream)

    def test_cluster_time_and_tokens_ordered(self):
        stream = self.watch(self.coll)
        self.coll.insert_many([{"_id": i} for i in range(1, 5)])
        self.coll.update_many({}, {"$inc": {"n": 1}})
        self.coll.delete_many({"_id": {"$lt": 3}})
        expected = ["insert"] * 4 + ["update"] * 4 + ["delete"] * 2
        last_time, last_token = None, None
        for operation_type in expected:
            event = self.next_event(stream)
            self.check_event(event, operation_type)
            if last_time is not None:
                self.assertGreater(event["clusterTime"], last_time)
                self.assertGreater(event["_id"]["_data"], last_token)
            last_time, last_token = event["clusterTime"], event["_id"]["_data"]
            # Never behind the event returned last: its _id, or the batch's
            # postBatchResumeToken after the batch's last event.
            self.assertGreaterEqual(stream.resume_token["_data"], event["_id"]["_data"])

    def test_update_lookup(self):
        # https://www.mongodb.com/docs/v6.0/changeStreams/
        #   #lookup-full-document-for-update-operations
        self.coll.insert_one({"_id": 1, "v": 0})
        stream = self.watch(self.coll, full_document="updateLookup")
        self.coll.update_one({"_id": 1}, {"$set": {"v": 1}})
        self.coll.update_one({"_id": 1}, {"$set": {"v": 2, "w": "x"}})
        self.coll.insert_one({"_id": 2, "v": 10})
        self.coll.update_one({"_id": 2}, {"$set": {"v": 11}})
        self.coll.delete_one({"_id": 2})
        event = self.next_event(stream)
        self.check_event(event, "update")
        self.assertEqual(event["updateDescription"]["updatedFields"], {"v": 1})
        self.assertEqual(event["fullDocument"], {"_id": 1, "v": 2, "w": "x"})
        event = self.next_event(stream)
        self.assertEqual(event["fullDocument"], {"_id": 1, "v": 2, "w": "x"})
        event = self.next_event(stream)
        self.check_event(event, "insert")
        event = self.next_event(stream)
        self.check_event(event, "update")
        self.assertIn("fullDocument", event)
        self.assertIsNone(event["fullDocument"])
        event = self.next_event(stream)
        self.check_event(event, "delete")
        self.assertNotIn("fullDocument", event)

    def test_match_and_project(self):
        only = self.watch(
            self.coll,
            [
                {"$match": {"operationType": {"$in": ["insert", "delete"]}}},
                {"$project": {"operationType": 1, "documentKey": 1}},
            ],
        )
        dlc = self.watch(self.coll, [{"$match": {"fullDocument.type": "dlc"}}])
        self.coll.insert_one({"_id": 1, "type": "game"})
        self.coll.update_one({"_id": 1}, {"$set": {"type": "dlc"}})
        self.coll.insert_one({"_id": 2, "type": "dlc"})
        self.coll.delete_one({"_id": 1})
        for operation_type, key in (("insert", 1), ("insert", 2), ("delete", 1)):
            event = self.next_event(only)
            self.assertEqual(sorted(event), ["_id", "documentKey", "operationType"])
            self.assertEqual(
                (event["operationType"], event["documentKey"]), (operation_type, {"_id": key})
            )
        self.expect_no_event(only)
        event = self.next_event(dlc)
        self.check_event(event, "insert")
        self.assertEqual(event["documentKey"], {"_id": 2})
        self.expect_no_event(dlc)

    def test_batch_size(self):
        stream = self.watch(self.coll, batch_size=2)
        self.coll.insert_many([{"_id": i} for i in range(1, 6)])
        self.recorder.start()
        self.assertEqual(
            [self.next_event(stream)["documentKey"]["_id"] for _ in range(5)], [1, 2, 3, 4, 5]
        )
        self.recorder.on = False
        batches = [b for (n, b, _, _) in self.recorder.entries if n == "getMore" and b > 0]
        self.assertEqual(sum(batches), 5)
        self.assertTrue(all(b <= 2 for b in batches), batches)
        self.assertGreaterEqual(len(batches), 3)

    def test_database_and_deployment_streams(self):
        other_db = unique_name("conformance_other")
        self.extra_dbs.append(other_db)
        db_stream = self.watch(self.db)
        everything = self.watch(
            self.client, [{"$match": {"ns.db": {"$in": [self.db_name, other_db]}}}]
        )
        self.coll.insert_one({"_id": 1})
        self.db.b.insert_one({"_id": 2})
        self.client[other_db].c.insert_one({"_id": 3})
        self.db.b.drop()
        self.coll.insert_one({"_id": 4})
        event = self.next_event(db_stream)
        self.assertEqual((event["operationType"], event["ns"]["coll"]), ("insert", "apps"))
        event = self.next_event(db_stream)
        self.assertEqual((event["operationType"], event["ns"]["coll"]), ("insert", "b"))
        event = self.next_event(db_stream)
        self.check_event(event, "drop")
        self.assertEqual(sorted(event), ["_id", "clusterTime", "ns", "operationType", "wallTime"])
        self.assertEqual(event["ns"], {"db": self.db_name, "coll": "b"})
        event = self.next_event(db_stream)
        self.assertEqual((event["operationType"], event["documentKey"]), ("insert", {"_id": 4}))
        self.expect_no_event(db_stream)
        expected = [
            ("insert", self.db_name, "apps"),
            ("insert", self.db_name, "b"),
            ("insert", other_db, "c"),
            ("drop", self.db_name, "b"),
            ("insert", self.db_name, "apps"),
        ]
        for operation_type, db, coll in expected:
            event = self.next_event(everything)
            self.check_event(event, operation_type)
            self.assertEqual(event["ns"], {"db": db, "coll": coll})
        self.expect_no_event(everything)

    def test_resume_after(self):
        stream = self.watch(self.coll)
        self.coll.insert_many([{"_id": i} for i in range(1, 5)])
        tokens = [self.next_event(stream)["_id"] for _ in range(4)]
        resumed = self.watch(self.coll, resume_after=tokens[1])
        self.assertEqual(self.next_event(resumed)["documentKey"], {"_id": 3})
        self.assertEqual(self.next_event(resumed)["documentKey"], {"_id": 4})
        self.expect_no_event(resumed)
        self.coll.insert_one({"_id": 5})
        self.assertEqual(self.next_event(resumed)["documentKey"], {"_id": 5})

    def test_start_at_operation_time(self):
        stream = self.watch(self.coll)
        for i in range(1, 5):
            self.coll.insert_one({"_id": i})
        times = [self.next_event(stream)["clusterTime"] for _ in range(4)]
        from_second = self.watch(self.coll, start_at_operation_time=times[1])
        self.assertEqual(
            [self.next_event(from_second)["documentKey"]["_id"] for _ in range(3)], [2, 3, 4]
        )
        self.expect_no_event(from_second)

    def test_drop_invalidates(self):
        # https://www.mongodb.com/docs/v6.0/reference/change-events/invalidate/
        self.coll.insert_one({"_id": 1})
        stream = self.watch(self.coll)
        self.coll.insert_one({"_id": 2})
        self.coll.drop()
        self.check_event(self.next_event(stream), "insert")
        event = self.next_event(stream)
        self.check_event(event, "drop")
        self.assertEqual(sorted(event), ["_id", "clusterTime", "ns", "operationType", "wallTime"])
        self.assertEqual(event["ns"], {"db": self.db_name, "coll": "apps"})
        event = self.next_event(stream)
        self.check_event(event, "invalidate")
        self.assertNotIn("documentKey", event)
        self.coll.insert_one({"_id": 3})
        self.assertIsNone(stream.try_next())
        self.assertFalse(stream.alive)

    def test_rename_invalidates(self):
        self.coll.insert_one({"_id": 1})
        stream = self.watch(self.coll)
        self.coll.rename("renamed")
        event = self.next_event(stream)
        self.check_event(event, "rename")
        self.assertEqual(
            sorted(event), ["_id", "clusterTime", "ns", "operationType", "to", "wallTime"]
        )
        self.assertEqual(event["ns"], {"db": self.db_name, "coll": "apps"})
        self.assertEqual(event["to"], {"db": self.db_name, "coll": "renamed"})
        self.check_event(self.next_event(stream), "invalidate")

    def test_start_after_invalidate(self):
        # startAfter an invalidate token works; resumeAfter it fails with 260 (src/mongo/db/
        # pipeline/document_source_change_stream.cpp: "Attempting to resume a change stream using
        # 'resumeAfter' is not allowed from an invalidate notification").
        # https://www.mongodb.com/docs/v6.0/changeStreams/#startafter
        self.coll.insert_one({"_id": 1})
        stream = self.watch(self.coll)
        self.coll.drop()
        self.check_event(self.next_event(stream), "drop")
        invalidate = self.next_event(stream)
        self.check_event(invalidate, "invalidate")
        self.assertEqual(stream.resume_token, invalidate["_id"])
        after = self.watch(self.coll, start_after=invalidate["_id"])
        self.coll.insert_one({"_id": 2, "name": "reborn"})
        event = self.next_event(after)
        self.check_event(event, "insert")
        self.assertEqual(event["fullDocument"], {"_id": 2, "name": "reborn"})
        self.expect_stream_error(
            lambda: self.coll.watch(
                resume_after=invalidate["_id"], max_await_time_ms=STREAM_AWAIT_MS
            ),
            260,
        )

    def test_drop_database(self):
        self.coll.insert_one({"_id": 1})
        self.db.b.insert_one({"_id": 1})
        stream = self.watch(self.db)
        self.client.drop_database(self.db_name)
        dropped = []
        event = self.next_event(stream)
        while event["operationType"] == "drop":
            self.check_event(event, "drop")
            self.assertEqual(event["ns"]["db"], self.db_name)
            dropped.append(event["ns"]["coll"])
            event = self.next_event(stream)
        self.assertEqual(sorted(dropped), ["apps", "b"])
        self.check_event(event, "dropDatabase")
        self.assertEqual(sorted(event), ["_id", "clusterTime", "ns", "operationType", "wallTime"])
        self.assertEqual(event["ns"], {"db": self.db_name})
        self.check_event(self.next_event(stream), "invalidate")

    def test_post_batch_resume_token_advances_when_idle(self):
        # https://www.mongodb.com/docs/v6.0/changeStreams/#resume-tokens-from-aggregate-and-getmore
        stream = self.watch(self.coll)
        self.assertIsNone(stream.try_next())
        first = stream.resume_token
        self.assertIsNotNone(first)
        self.recorder.start()
        advanced = False
        for round_number in range(20):
            self.db.other.insert_one({"round": round_number})
            self.assertIsNone(stream.try_next())
            now = stream.resume_token
            if now != first:
                self.assertGreater(now["_data"], first["_data"])
                advanced = True
                break
        self.recorder.on = False
        self.assertTrue(advanced)
        get_mores = [e for e in self.recorder.entries if e[0] == "getMore"]
        self.assertTrue(get_mores)
        for _, batch, _, has_token in get_mores:
            self.assertEqual(batch, 0)
            self.assertTrue(has_token)

    def test_get_more_waits_max_await_time(self):
        # https://www.mongodb.com/docs/v6.0/reference/command/getMore/
        stream = self.watch(self.coll, max_await_time_ms=1000)
        start = time.monotonic()
        self.assertIsNone(stream.try_next())
        waited = time.monotonic() - start
        self.assertTrue(
            0.9 <= waited <= 5, "an idle getMore with maxAwaitTimeMS 1000 took %.3f s" % waited
        )

        slow = self.watch(self.coll, max_await_time_ms=5000)
        writer_client = self.new_client(self.server.uri)

        def write_later():
            time.sleep(0.3)
            writer_client[self.db_name].apps.insert_one({"_id": 77})

        writer = threading.Thread(target=write_later)
        writer.start()
        start = time.monotonic()
        event = slow.try_next()
        waited = time.monotonic() - start
        writer.join()
        self.assertIsNotNone(event)
        self.assertEqual(event["documentKey"], {"_id": 77})
        self.assertLess(waited, 4, "the event written after 0.3 s arrived after %.3f s" % waited)


class HistoryTest(DoubleTest):
    def test_start_at_operation_time_too_old(self):
        # 286 ChangeStreamHistoryLost (src/mongo/db/pipeline/
        # document_source_change_stream_check_resumability.cpp); Timestamp(1, 1) is older than any
        # deployment's history.
        self.coll.insert_one({"_id": 1})
        self.expect_stream_error(
            lambda: self.coll.watch(
                start_at_operation_time=Timestamp(1, 1), max_await_time_ms=STREAM_AWAIT_MS
            ),
            286,
        )

    def test_malformed_token(self):
        # A real server answers a non-hex _data with 9 FailedToParse ("resume token string was
        # not a valid hex string", ResumeToken::getData in src/mongo/db/pipeline/resume_token.cpp).
        self.coll.insert_one({"_id": 1})
        self.expect_stream_error(
            lambda: self.coll.watch(
                resume_after={"_data": "this is not a resume token"},
                max_await_time_ms=STREAM_AWAIT_MS,
            ),
            9,
        )


class _TokenFellOff:
    """Mixed into a DoubleTest whose double has a tiny history."""

    def test_token_fell_off(self):
        if self.server.external:
            sys.stderr.write(
                "note: FTSYNC_TEST_MONGO_URI is a real server whose history cannot be made short; "
                "checking 286 through startAtOperationTime instead\n"
            )
            self.expect_stream_error(
                lambda: self.coll.watch(start_at_operation_time=Timestamp(1, 1)), 286
            )
            return
        stream = self.watch(self.coll)
        self.coll.insert_one({"_id": 0})
        token = self.next_event(stream)["_id"]
        padding = "x" * 1000
        for i in range(1, 201):
            self.coll.insert_one({"_id": i, "padding": padding})
        self.expect_stream_error(
            lambda: self.coll.watch(resume_after=token, max_await_time_ms=STREAM_AWAIT_MS), 286
        )
        fresh = self.watch(self.coll)
        self.coll.insert_one({"_id": 1000})
        self.coll.insert_one({"_id": 1001})
        recent = self.next_event(fresh)["_id"]
        resumed = self.watch(self.coll, resume_after=recent)
        self.assertEqual(self.next_event(resumed)["documentKey"], {"_id": 1001})


class HistoryEventsTest(_TokenFellOff, DoubleTest):
    extra_args = ("--history-events", "16")


class HistoryBytesTest(_TokenFellOff, DoubleTest):
    extra_args = ("--history-bytes", "16384")


class FailPointTest(DoubleTest):
    """failCommand: https://github.com/mongodb/mongo/wiki/The-%22failCommand%22-fail-point"""

    def test_always_on_and_off(self):
        self.fail_point("alwaysOn", {"failCommands": ["insert"], "errorCode": 2})
        for i in range(3):
            with self.assertRaises(OperationFailure) as raised:
                self.coll.insert_one({"_id": i})
            self.assertEqual(raised.exception.code, 2)
        details = self.command_fails(
            self.db_name, SON([("insert", "apps"), ("documents", [{"_id": 9}])]), 2
        )
        self.assertEqual(details["ok"], 0)
        self.assertEqual(self.ids(self.coll), [])
        self.fail_point("off")
        self.coll.insert_one({"_id": 1})
        self.assertEqual(self.ids(self.coll), [1])

    def test_times(self):
        self.fail_point({"times": 2}, {"failCommands": ["insert", "find"], "errorCode": 8})
        with self.assertRaises(OperationFailure) as raised:
            self.coll.insert_one({"_id": 1})
        self.assertEqual(raised.exception.code, 8)
        with self.assertRaises(OperationFailure) as raised:
            list(self.coll.find())
        self.assertEqual(raised.exception.code, 8)
        self.coll.insert_one({"_id": 2})
        self.coll.insert_one({"_id": 3})
        self.assertEqual(self.ids(self.coll, sort=[("_id", 1)]), [2, 3])

    def test_resumable_change_stream_error(self):
        # With the ResumableChangeStreamError label the driver resumes and nothing is lost;
        # without it the error reaches the application (Change Streams spec, wire version >= 9).
        stream = self.watch(self.coll)
        self.coll.insert_one({"_id": 1})
        self.assertEqual(self.next_event(stream)["documentKey"], {"_id": 1})
        self.fail_point(
            {"times": 1},
            {
                "failCommands": ["getMore"],
                "errorCode": 280,
                "errorLabels": ["ResumableChangeStreamError"],
            },
        )
        self.coll.insert_one({"_id": 2})
        self.coll.insert_one({"_id": 3})
        self.recorder.start()
        self.assertEqual(self.next_event(stream)["documentKey"], {"_id": 2})
        self.assertEqual(self.next_event(stream)["documentKey"], {"_id": 3})
        self.recorder.on = False
        self.expect_no_event(stream)
        self.assertIn("aggregate", self.recorder.names())
        self.fail_point({"times": 1}, {"failCommands": ["getMore"], "errorCode": 280})
        self.coll.insert_one({"_id": 4})
        with self.assertRaises(OperationFailure) as raised:
            self.next_event(stream)
        self.assertEqual(raised.exception.code, 280)

    def test_close_connection(self):
        self.coll.insert_one({"_id": 1})
        self.fail_point({"times": 1}, {"failCommands": ["count"], "closeConnection": True})
        with self.assertRaises(AutoReconnect):
            self.db.command("count", "apps")
        self.assertEqual(self.db.command("count", "apps")["n"], 1)

    def test_block_connection(self):
        self.coll.insert_one({"_id": 1})
        self.fail_point(
            {"times": 1}, {"failCommands": ["count"], "blockConnection": True, "blockTimeMS": 700}
        )
        start = time.monotonic()
        self.assertEqual(self.db.command("count", "apps")["n"], 1)
        took = time.monotonic() - start
        self.assertGreaterEqual(
            took, 0.69, "a command blocked for 700 ms was answered after %.3f s" % took
        )
        start = time.monotonic()
        self.db.command("count", "apps")
        self.assertLess(time.monotonic() - start, 0.5)


class StepDownTest(DoubleTest):
    def test_step_down(self):
        # https://www.mongodb.com/docs/v6.0/reference/command/replSetStepDown/
        self.coll.insert_one({"_id": 1})
        host, port = self.client.primary
        direct = self.new_client(
            "mongodb://%s:%d/" % (host, port), directConnection=True, retryWrites=False
        )
        self.assertIs(direct.admin.command("hello")["isWritablePrimary"], True)
        stepped = time.monotonic()
        self.client.admin.command(
            SON([("replSetStepDown", 3), ("secondaryCatchUpPeriodSecs", 0), ("force", True)])
        )
        hello = direct.admin.command("hello")
        self.assertIs(hello["isWritablePrimary"], False)
        self.assertIs(hello["secondary"], True)
        self.assertNotIn("primary", hello)
        self.assertEqual(hello["setName"], self.set_name())
        db = direct[self.db_name]
        for command in (
            SON([("insert", "apps"), ("documents", [{"_id": 2}])]),
            SON([("update", "apps"), ("updates", [{"q": {"_id": 1}, "u": {"$set": {"x": 1}}}])]),
            SON([("delete", "apps"), ("deletes", [{"q": {"_id": 1}, "limit": 1}])]),
        ):
            # pymongo raises NotMasterError (3.11) / NotPrimaryError (4.x), an AutoReconnect, for
            # this code.
            with self.assertRaises(NotPrimaryError) as raised:
                db.command(command)
            self.assertEqual(raised.exception.details["code"], 10107)
            self.assertEqual(raised.exception.details["codeName"], "NotWritablePrimary")
            # Since 4.4 a state change error carries the member's topologyVersion, so that a
            # driver can tell an error it already knows about (same version as its last hello:
            # ignore it) from news (mark the server Unknown). Without it pymongo marks the
            # server Unknown and waits for its monitor's next hello. See the SDAM
            # specification's error handling and SERVER-50735.
            self.assertEqual(
                raised.exception.details.get("topologyVersion"), hello["topologyVersion"]
            )
        primary = False
        while not primary and time.monotonic() - stepped < 40:
            time.sleep(0.2)
            primary = direct.admin.command("hello")["isWritablePrimary"]
        self.assertTrue(primary)
        self.assertGreaterEqual(time.monotonic() - stepped, 2.9)
        self.coll.insert_one({"_id": 2})
        self.assertEqual(db.command(SON([("insert", "apps"), ("documents", [{"_id": 3}])]))["n"], 1)
        self.assertEqual(self.ids(self.coll, sort=[("_id", 1)]), [1, 2, 3])


class _RawCursors:
    """Cursors opened and read with plain commands, all in one explicit session (mongod refuses
    a getMore from another session than the one that opened the cursor), on a client of their
    own that watches the server every 500 ms: an error such as 91 ShutdownInProgress marks the
    server Unknown until the monitor's next (streamed) hello, and the default 10 s would outlast
    server selection."""

    def raw_db(self):
        if getattr(self, "_raw_session", None) is None:
            client = self.new_client(self.server.uri, heartbeatFrequencyMS=500)
            # Ended with its client, which tearDown closes.
            self._raw_session = client.start_session()
        return self._raw_session.client[self.db_name]

    def raw_command(self, command):
        return self.raw_db().command(command, session=self._raw_session)

    def raw_stream(self, coll="apps", spec=None):
        reply = self.raw_command(
            SON(
                [
                    ("aggregate", coll),
                    ("pipeline", [{"$changeStream": spec or {}}]),
                    ("cursor", {}),
                ]
            )
        )
        self.assertNotEqual(reply["cursor"]["id"], 0)
        return reply["cursor"]["id"]

    def raw_get_more(self, cursor_id, coll="apps", await_data=True):
        # A change stream's getMore (awaitData) waits at most 100 ms; others may not name
        # maxTimeMS.
        command = SON([("getMore", Int64(cursor_id)), ("collection", coll)])
        if await_data:
            command["maxTimeMS"] = 100
        return self.raw_command(command)

    def get_more_fails(self, cursor_id, code, coll="apps", await_data=True):
        # Some codes (91) make pymongo raise an AutoReconnect subclass, not OperationFailure;
        # both carry the server's reply as details.
        with self.assertRaises(pymongo.errors.PyMongoError) as raised:
            self.raw_get_more(cursor_id, coll, await_data)
        details = raised.exception.details
        self.assertIsNotNone(details, raised.exception)
        self.assertEqual(details["code"], code, details)
        return details


class InjectedErrorTest(_RawCursors, DoubleTest):
    """Errors injected on getMore, and the labels that decide whether a driver resumes.
    failCommand: https://github.com/mongodb/mongo/wiki/The-%22failCommand%22-fail-point;
    failGetMoreAfterCursorCheckout: src/mongo/db/commands/getmore_cmd.cpp and the Change Streams
    spec test change-streams-resume-errorLabels (SERVER-46091)."""

    def get_more_fail_point(self, mode, data=None):
        self.used_fail_point = True
        if self.server.external:
            self.addCleanup(
                self.client.admin.command,
                SON([("configureFailPoint", "failGetMoreAfterCursorCheckout"), ("mode", "off")]),
            )
        command = SON([("configureFailPoint", "failGetMoreAfterCursorCheckout"), ("mode", mode)])
        if data is not None:
            command["data"] = data
        self.client.admin.command(command)

    def test_injected_get_more_error_has_no_label(self):
        # failCommand acts before the getMore checked its cursor out: mongod does not know yet
        # that it belongs to a change stream and adds no ResumableChangeStreamError label, so a
        # driver must not resume. Labels given in errorLabels come back as given.
        for code in (6, 91):
            cursor_id = self.raw_stream()
            self.fail_point({"times": 1}, {"failCommands": ["getMore"], "errorCode": code})
            details = self.get_more_fails(cursor_id, code)
            self.assertNotIn("errorLabels", details)
        cursor_id = self.raw_stream()
        self.fail_point(
            {"times": 1},
            {
                "failCommands": ["getMore"],
                "errorCode": 91,
                "errorLabels": ["ResumableChangeStreamError"],
            },
        )
        details = self.get_more_fails(cursor_id, 91)
        self.assertEqual(details["errorLabels"], ["ResumableChangeStreamError"])
        stream = self.watch(self.coll)
        self.coll.insert_one({"_id": 1})
        self.assertEqual(self.next_event(stream)["documentKey"], {"_id": 1})
        self.fail_point({"times": 1}, {"failCommands": ["getMore"], "errorCode": 6})
        self.coll.insert_one({"_id": 2})
        with self.assertRaises(OperationFailure) as raised:
            self.next_event(stream)
        self.assertEqual(raised.exception.code, 6)

    def test_fail_get_more_after_cursor_checkout(self):
        # The error is raised inside the getMore, after the cursor was checked out, and goes
        # through mongod's usual label rules; the failed getMore deletes its cursor.
        cursor_id = self.raw_stream()
        self.get_more_fail_point({"times": 1}, {"errorCode": 6})
        details = self.get_more_fails(cursor_id, 6)
        self.assertEqual(details["errorLabels"], ["ResumableChangeStreamError"])
        self.get_more_fails(cursor_id, 43)
        # Not resumable: no label; a find cursor is no change stream: no label.
        cursor_id = self.raw_stream()
        self.get_more_fail_point("alwaysOn", {"errorCode": 2})
        self.assertNotIn("errorLabels", self.get_more_fails(cursor_id, 2))
        self.coll.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3}])
        self.get_more_fail_point("alwaysOn", {"errorCode": 6})
        cursor_id = self.raw_command(SON([("find", "apps"), ("batchSize", 1)]))["cursor"]["id"]
        self.assertNotIn("errorLabels", self.get_more_fails(cursor_id, 6, await_data=False))
        self.get_more_fail_point("off")
        cursor_id = self.raw_command(SON([("find", "apps"), ("batchSize", 1)]))["cursor"]["id"]
        self.assertEqual(
            self.raw_get_more(cursor_id, await_data=False)["cursor"]["nextBatch"],
            [{"_id": 2}, {"_id": 3}],
        )
        # Through the driver: it resumes, nothing lost or repeated.
        stream = self.watch(self.coll)
        self.coll.insert_one({"_id": 11})
        self.assertEqual(self.next_event(stream)["documentKey"], {"_id": 11})
        self.get_more_fail_point({"times": 1}, {"errorCode": 6})
        self.coll.insert_one({"_id": 12})
        self.coll.insert_one({"_id": 13})
        self.recorder.start()
        self.assertEqual(self.next_event(stream)["documentKey"], {"_id": 12})
        self.assertEqual(self.next_event(stream)["documentKey"], {"_id": 13})
        self.recorder.on = False
        self.expect_no_event(stream)
        self.assertIn("aggregate", self.recorder.names())


class ChangeStreamPipelineAndRenameTest(_RawCursors, DoubleTest):
    def test_unknown_stage(self):
        # An unknown stage name: 40324 when the pipeline is parsed; a known stage that may not
        # follow $changeStream: 20 IllegalOperation (src/mongo/db/pipeline/pipeline.cpp).
        # https://www.mongodb.com/docs/v6.0/changeStreams/#modify-change-stream-output
        details = self.command_fails(
            self.db_name,
            SON(
                [
                    ("aggregate", "apps"),
                    ("pipeline", [{"$changeStream": {}}, {"$frobnicate": {}}]),
                    ("cursor", {}),
                ]
            ),
            40324,
        )
        self.assertEqual(details["codeName"], "Location40324")
        self.command_fails(
            self.db_name,
            SON(
                [
                    ("aggregate", "apps"),
                    ("pipeline", [{"$changeStream": {}}, {"$group": {"_id": None}}]),
                    ("cursor", {}),
                ]
            ),
            20,
        )
        self.expect_stream_error(lambda: self.coll.watch([{"$frobnicate": {}}]), 40324)

    def test_rename_drop_target_description(self):
        # With showExpandedEvents the rename event carries operationDescription {to, dropTarget:
        # UUID of the dropped target}; without it there is none.
        # https://www.mongodb.com/docs/v6.0/reference/change-events/rename/
        self.coll.insert_one({"_id": 1})
        self.db.dst.insert_one({"_id": 2})
        infos = {c["name"]: c["info"]["uuid"] for c in self.db.list_collections()}
        cursors = [self.raw_stream(spec={"showExpandedEvents": True}), self.raw_stream()]
        self.client.admin.command(
            SON(
                [
                    ("renameCollection", self.db_name + ".apps"),
                    ("to", self.db_name + ".dst"),
                    ("dropTarget", True),
                ]
            )
        )
        events = []
        for cursor_id in cursors:
            deadline = time.monotonic() + EVENT_TIMEOUT_S
            batch = []
            while not batch and time.monotonic() < deadline:
                batch = self.raw_get_more(cursor_id)["cursor"]["nextBatch"]
            self.assertTrue(batch, "no rename event within %s s" % EVENT_TIMEOUT_S)
            events.append(batch[0])
        expanded, plain = events
        self.check_event(expanded, "rename")
        target = {"db": self.db_name, "coll": "dst"}
        self.assertEqual(expanded["to"], target)
        self.assertEqual(
            expanded["operationDescription"], {"to": target, "dropTarget": infos["dst"]}
        )
        self.assertEqual(expanded["collectionUUID"], infos["apps"])
        self.check_event(plain, "rename")
        self.assertEqual(
            sorted(plain.keys()), ["_id", "clusterTime", "ns", "operationType", "to", "wallTime"]
        )


# 7 MB strings: a document of two is 14 MB; with updateLookup the update that set the second has
# it in updateDescription too, 21 MB in all, over the 16 MB a change event may have.
LARGE_FIELD_BYTES = 7 * 1024 * 1024
SPLIT = {"$changeStreamSplitLargeEvent": {}}


class LargeEventTest(DoubleTest):
    """Change events over 16 MB. MongoDB manual, $changeStreamSplitLargeEvent (new in 7.0 and
    6.0.9): "If a change stream has large events that exceed 16 MB, a BSONObjectTooLarge
    exception is returned"; the stage splits them into fragments with splitEvent {fragment, of}
    and a resume token each."""

    def write_large_update(self):
        self.coll.update_one({"_id": 1}, {"$set": {"b": "b" * LARGE_FIELD_BYTES}})
        self.coll.insert_one({"_id": 2})

    def test_too_large(self):
        # 10334 BSONObjectTooLarge, without the ResumableChangeStreamError label: the driver
        # does not resume into the same error.
        stream = self.coll.watch(full_document="updateLookup", max_await_time_ms=STREAM_AWAIT_MS)
        self.streams.append(stream)
        self.coll.insert_one({"_id": 1, "a": "a" * LARGE_FIELD_BYTES})
        inserted = self.next_event(stream)
        self.check_event(inserted, "insert")
        self.write_large_update()
        error = self.expect_stream_error(lambda: stream, 10334)
        self.assertEqual(error.details["codeName"], "BSONObjectTooLarge")
        self.assertNotIn("errorLabels", error.details)
        # Without the post-image the same event fits.
        small = self.coll.watch(
            resume_after=inserted["_id"], max_await_time_ms=STREAM_AWAIT_MS
        )
        self.streams.append(small)
        event = self.next_event(small)
        self.check_event(event, "update")
        self.assertNotIn("fullDocument", event)
        self.assertEqual(len(event["updateDescription"]["updatedFields"]["b"]), LARGE_FIELD_BYTES)

    def test_split(self):
        # Fragments: every top-level field in exactly one of them, none cut, the small ones
        # (the event's context) in the first; tokens ordered; resuming from a fragment's token
        # goes on with the next fragment, from the last one's with the next event.
        stream = self.coll.watch(
            [SPLIT], full_document="updateLookup", max_await_time_ms=STREAM_AWAIT_MS
        )
        self.streams.append(stream)
        self.coll.insert_one({"_id": 1, "a": "a" * LARGE_FIELD_BYTES})
        self.write_large_update()
        inserted = self.next_event(stream)
        self.check_event(inserted, "insert")
        self.assertNotIn("splitEvent", inserted)
        fragments = []
        while not fragments or len(fragments) < fragments[0]["splitEvent"]["of"]:
            fragment = self.next_event(stream)
            self.assertEqual(fragment["splitEvent"]["fragment"], len(fragments) + 1)
            self.assertLessEqual(len(bson.encode(fragment)), 16 * 1024 * 1024)
            fragments.append(fragment)
        total = len(fragments)
        self.assertGreaterEqual(total, 2)
        whole = {}
        for fragment in fragments:
            self.assertEqual(fragment["splitEvent"]["of"], total)
            for key, value in fragment.items():
                if key not in ("_id", "splitEvent"):
                    self.assertNotIn(key, whole)
                    whole[key] = value
        self.assertEqual(whole["operationType"], "update")
        self.assertEqual(whole["documentKey"], {"_id": 1})
        self.assertEqual(len(whole["fullDocument"]["a"]), LARGE_FIELD_BYTES)
        self.assertEqual(len(whole["fullDocument"]["b"]), LARGE_FIELD_BYTES)
        self.assertEqual(len(whole["updateDescription"]["updatedFields"]["b"]), LARGE_FIELD_BYTES)
        self.assertIn("operationType", fragments[0])
        tokens = [inserted["_id"]["_data"]] + [f["_id"]["_data"] for f in fragments]
        self.assertEqual(tokens, sorted(tokens))
        after = self.next_event(stream)
        self.check_event(after, "insert")
        self.assertEqual(after["documentKey"], {"_id": 2})
        self.assertLess(tokens[-1], after["_id"]["_data"])

        resumed = self.coll.watch(
            [SPLIT],
            full_document="updateLookup",
            resume_after=fragments[0]["_id"],
            max_await_time_ms=STREAM_AWAIT_MS,
        )
        self.streams.append(resumed)
        event = self.next_event(resumed)
        self.assertEqual(event["splitEvent"], {"fragment": 2, "of": total})
        self.assertEqual(event["_id"], fragments[1]["_id"])
        resumed = self.coll.watch(
            [SPLIT],
            full_document="updateLookup",
            resume_after=fragments[-1]["_id"],
            max_await_time_ms=STREAM_AWAIT_MS,
        )
        self.streams.append(resumed)
        event = self.next_event(resumed)
        self.check_event(event, "insert")
        self.assertEqual(event["documentKey"], {"_id": 2})

    def test_split_stage_position(self):
        # The last stage (7182802), with an empty spec (7182800):
        # src/mongo/db/pipeline/document_source_change_stream_split_large_event.cpp
        def aggregate(pipeline):
            return SON([("aggregate", "apps"), ("pipeline", pipeline), ("cursor", {})])

        self.command_fails(
            self.db_name, aggregate([{"$changeStream": {}}, SPLIT, {"$match": {}}]), 7182802
        )
        self.command_fails(
            self.db_name,
            aggregate([{"$changeStream": {}}, {"$changeStreamSplitLargeEvent": {"x": 1}}]),
            7182800,
        )
        self.db.command(aggregate([{"$changeStream": {}}, {"$match": {}}, SPLIT]))


class NoSplitStageTest(DoubleTest):
    """A server before 6.0.9 does not know the stage: "Unrecognized pipeline stage name"
    (40324). The double shows it with --no-split-stage; a real server (no such switch) is
    checked through the same door with a stage no version knows."""

    extra_args = ("--no-split-stage",)

    def test_unknown_split_stage(self):
        stage = "$changeStreamSplitLargeEvent"
        if self.server.external:
            stage += "NoSuchStage"
        details = self.command_fails(
            self.db_name,
            SON(
                [
                    ("aggregate", "apps"),
                    ("pipeline", [{"$changeStream": {}}, {stage: {}}]),
                    ("cursor", {}),
                ]
            ),
            40324,
        )
        self.assertEqual(details["codeName"], "Location40324")


def uuid_bytes(value):
    """The 16 bytes of a UUID however pymongo decoded it."""
    return value.bytes if hasattr(value, "bytes") else bytes(value)


class TransactionTest(DoubleTest):
    """Multi-document transactions as pymongo runs them (start_session, start_transaction,
    commit_transaction, abort_transaction). https://www.mongodb.com/docs/v6.0/core/transactions/
    and https://www.mongodb.com/docs/v6.0/reference/change-events/ (lsid, txnNumber; the events
    of one transaction share its clusterTime)."""

    def test_commit_is_atomic_and_events_share_the_commit_time(self):
        self.coll.insert_one({"_id": 0, "name": "before"})
        stream = self.watch(self.coll)
        other = self.new_client(self.server.uri)[self.db_name].apps
        with self.client.start_session() as session:
            session.start_transaction()
            self.coll.insert_one({"_id": 1, "name": "a"}, session=session)
            self.coll.delete_one({"_id": 1}, session=session)
            self.coll.insert_one({"_id": 2, "name": "b"}, session=session)
            self.coll.update_one({"_id": 2}, {"$set": {"name": "b2"}}, session=session)
            self.coll.delete_one({"_id": 0}, session=session)
            # The transaction sees its writes; nobody else does yet.
            self.assertEqual(list(self.coll.find({}, session=session)), [{"_id": 2, "name": "b2"}])
            self.assertEqual(list(other.find({})), [{"_id": 0, "name": "before"}])
            self.expect_no_event(stream)
            session.commit_transaction()
            lsid = session.session_id
        self.assertEqual(list(other.find({})), [{"_id": 2, "name": "b2"}])
        events = [self.next_event(stream) for _ in range(5)]
        self.assertEqual(
            [e["operationType"] for e in events], ["insert", "delete", "insert", "update", "delete"]
        )
        for event in events:
            self.check_event(event, event["operationType"])
            self.assertEqual(event["clusterTime"], events[0]["clusterTime"])
            # UUID or Binary subtype 4, depending on pymongo's uuidRepresentation default.
            self.assertEqual(uuid_bytes(event["lsid"]["id"]), uuid_bytes(lsid["id"]))
            self.assertEqual(event["txnNumber"], 1)
            self.assertIsInstance(event["txnNumber"], Int64)
        tokens = [e["_id"]["_data"] for e in events]
        self.assertEqual(tokens, sorted(set(tokens)), "resume tokens not strictly ordered")
        # The driver's resume token (the last event's, or a later postBatchResumeToken) is
        # never behind the last event it returned.
        self.assertGreaterEqual(stream.resume_token["_data"], tokens[-1])
        self.coll.insert_one({"_id": 3})
        after = self.next_event(stream)
        self.assertGreater(after["clusterTime"], events[0]["clusterTime"])
        self.assertNotIn("lsid", after)
        self.assertNotIn("txnNumber", after)
        self.assertGreater(after["_id"]["_data"], tokens[-1])

    def test_resume_inside_a_transaction(self):
        stream = self.watch(self.coll)
        with self.client.start_session() as session:
            with session.start_transaction():
                for i in range(4):
                    self.coll.insert_one({"_id": i}, session=session)
        events = [self.next_event(stream) for _ in range(4)]
        resumed = self.watch(self.coll, resume_after=events[1]["_id"])
        rest = [self.next_event(resumed) for _ in range(2)]
        self.assertEqual([e["_id"] for e in rest], [e["_id"] for e in events[2:]])

    def test_abort_changes_nothing_and_logs_nothing(self):
        self.coll.insert_one({"_id": 0})
        stream = self.watch(self.coll)
        with self.client.start_session() as session:
            session.start_transaction()
            self.coll.insert_one({"_id": 1}, session=session)
            self.coll.delete_one({"_id": 0}, session=session)
            session.abort_transaction()
        self.assertEqual(self.ids(self.coll), [0])
        self.coll.insert_one({"_id": 7})
        self.assertEqual(self.next_event(stream)["documentKey"], {"_id": 7})

    def test_unknown_transaction_is_no_such_transaction(self):
        # transaction_participant.cpp: "Given transaction number N does not match any in-progress
        # transactions"; error_labels.cpp adds TransientTransactionError on commit without a
        # write-concern error.
        with self.client.start_session() as session:
            with self.assertRaises(OperationFailure) as raised:
                self.client.admin.command(
                    SON([("commitTransaction", 1), ("txnNumber", Int64(42)), ("autocommit", False)]),
                    session=session,
                )
        self.assertEqual(raised.exception.code, 251, raised.exception.details)
        self.assertEqual(raised.exception.details["codeName"], "NoSuchTransaction")
        self.assertIn("TransientTransactionError", raised.exception.details["errorLabels"])

    def test_count_is_not_allowed_in_a_transaction(self):
        with self.client.start_session() as session:
            session.start_transaction()
            with self.assertRaises(OperationFailure) as raised:
                self.db.command(SON([("count", "apps")]), session=session)
            self.assertEqual(raised.exception.code, 263, raised.exception.details)
            session.abort_transaction()


class ClockStartTest(DoubleTest):
    """--clock-start: cluster times past January 2038 (2200000000 is 2039-09-18)."""

    extra_args = ("--clock-start", "2200000000")

    def test_cluster_time_past_2038(self):
        stream = self.watch(self.coll)
        self.coll.insert_one({"_id": 1})
        event = self.next_event(stream)
        if self.server.external:
            return  # a real server's clock cannot be set
        self.assertGreaterEqual(event["clusterTime"].time, 2200000000)
        self.assertLess(event["clusterTime"].time, 2200000000 + 600)
        self.assertGreaterEqual(event["wallTime"].year, 2039)


if __name__ == "__main__":
    print("double_conformance: pymongo %s, Python %s" % (pymongo.version, sys.version.split()[0]))
    unittest.main(verbosity=2)
