#!/usr/bin/python3
"""chaos.py - the chaos suite (issue 13, item 9): ftsync under a mixed workload while faults
are injected at random moments, then the index must equal the collection.

What runs (all on loopback, all owned by this controller, all stopped at exit):
  * a private redis-server with AOF (appendfsync always), so it can be killed and restarted
    on the same port and data;
  * the MongoDB replica-set double (test/double) with a small change history
    (--history-events), so that an outage of extract longer than the history loses its place;
  * a TCP proxy in front of the test bed's search engine (fts_testbed_es_url's
    FTSYNC_TEST_OPENSEARCH_URL): an "Elasticsearch outage" closes the proxy's listener and every
    connection through it, so ftsync sees connection refused for the outage, exactly as if the
    node were stopped, while the shared test-bed node keeps serving the other tests;
  * `ftsync run` (the supervisor: one extract with its forked transform worker, one load)
    and, beside it, a second `ftsync load` process: two loaders in one consumer group;
  * the workload: ftsync-workload in chunks (inserts, updates, replaces, deletes; accented,
    Cyrillic, Greek, CJK, Hangul and emoji text) and this controller's own writer of
    multi-document transactions (through pymongo sessions) and large documents (200-600 KB).

The faults, one at a time at random moments (the seed is printed; FTSYNC_CHAOS_SEED replays
the same kinds, parameters and pauses; the processes' own timing still varies): kill -9 of the
supervisor, of extract, of the transform worker and of a loader; SIGTERM of everything (a
rolling restart); the search engine away for a while (FTSYNC_CHAOS_ES_OUTAGE_S, "10-15" in CI,
"10-60" in the long form); Redis killed and restarted from its AOF; Redis killed and restarted
WITHOUT its files (it lost its data: extract must notice through its epoch marker and resync,
loaders must recreate the group); fail points of the double (failCommand closeConnection on the
change stream's getMore and aggregate, failGetMoreAfterCursorCheckout with a resumable code,
failCommand blockConnection); a step-down of the primary (and its step-up); a lost history
(ftsync stopped while more changes than the double keeps are written, then started again).

Then the workload stops, the pipeline drains, and both must say the index equals the
collection: `ftsync verify` (exit 0) and this controller's own comparison (every document read
with pymongo, every index document read over HTTP with a scroll: no document missing, none
extra, none stale in any indexed field), the consumer group is drained (nothing pending, its
last delivered ID is the stream's last), and there is no dead letter (no injected fault explains
one: a dead letter fails the run with its reason).

Environment: FTSYNC_BINARY, FTSYNC_MONGO_DOUBLE, FTSYNC_WORKLOAD (paths, set by CTest),
FTSYNC_TESTBED_DIR (testbed.env), FTSYNC_SOURCE_DIR; FTSYNC_CHAOS_FAULTS (default 30),
FTSYNC_CHAOS_SEED (default: from the clock, printed), FTSYNC_CHAOS_ES_OUTAGE_S ("10-15"),
FTSYNC_CHAOS_ID_FIELD (`id`, the default: the original service's configuration, with ObjectId
_ids and the id map; or `_id`: integer _ids as index ids). Exit 0 when everything matched, 1 otherwise (what differed is
printed), 2 on bad usage.
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import bson
import pymongo
from pymongo.errors import PyMongoError

FIELDS = ["name", "short_description", "developers", "publishers", "updated_at"]
TXN_ID_BASE = 900_000_000  # ids of the controller's own documents, far from the workload's


def log(msg):
    print("[chaos %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_env_file(path):
    out = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.strip().split("=", 1)
                out[k] = v
    return out


# ---- the search engine's proxy: an outage closes it --------------------------------------------


class EsProxy:
    """Forwards 127.0.0.1:port to the search engine. down() refuses new connections (the
    listener is closed) and cuts the open ones; up() listens again on the same port."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.lock = threading.Lock()
        self.conns = set()
        self.listener = None
        self.up()

    def up(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(100):
            try:
                ls.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.1)
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self):
        ls, self.listener = self.listener, None
        try:
            ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        ls.close()
        with self.lock:
            for c in list(self.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.conns.clear()

    def _accept(self, ls):
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not ls:
                    client.close()
                    server.close()
                    return
                self.conns.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            self.conns.discard(src)
            self.conns.discard(dst)


# ---- the controller ------------------------------------------------------------------------------


class UsageError(Exception):
    """A setting of this controller is wrong: exit 2 with the message."""


def env_int(name, default):
    text = os.environ.get(name, default)
    try:
        value = int(text)
    except ValueError:
        raise UsageError("%s=%r: expected a whole number" % (name, text)) from None
    if value < 0:
        raise UsageError("%s=%r: expected a number >= 0" % (name, text))
    return value


class Chaos:
    def __init__(self):
        for name in ("FTSYNC_BINARY", "FTSYNC_MONGO_DOUBLE", "FTSYNC_WORKLOAD"):
            if not os.environ.get(name):
                raise UsageError("%s is not set (the path of the program; CTest sets it)" % name)
        self.ftsync = os.environ["FTSYNC_BINARY"]
        self.double = os.environ["FTSYNC_MONGO_DOUBLE"]
        self.workload = os.environ["FTSYNC_WORKLOAD"]
        self.source = os.environ.get(
            "FTSYNC_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        self.testbed = os.environ.get("FTSYNC_TESTBED_DIR", "/tmp")
        self.faults = env_int("FTSYNC_CHAOS_FAULTS", "30")
        self.seed = env_int("FTSYNC_CHAOS_SEED", str(int(time.time() * 1000) % 1_000_000_007))
        outage = os.environ.get("FTSYNC_CHAOS_ES_OUTAGE_S", "10-15")
        try:
            lo, hi = (float(x) for x in outage.split("-"))
        except ValueError:
            lo, hi = -1, -2
        if not 0 < lo <= hi:
            raise UsageError("FTSYNC_CHAOS_ES_OUTAGE_S=%r: expected seconds MIN-MAX, such as 10-60"
                             % outage)
        self.outage_s = (lo, hi)
        self.id_field = os.environ.get("FTSYNC_CHAOS_ID_FIELD", "id")
        if self.id_field not in ("id", "_id"):
            raise UsageError("FTSYNC_CHAOS_ID_FIELD=%r: expected id or _id" % self.id_field)
        self.rng = random.Random(self.seed)
        self.dir = os.path.join(self.testbed, "chaos-%d" % os.getpid())
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.procs = {}  # name -> Popen we own
        self.counts = {}  # fault kind -> times injected
        self.stop_writing = threading.Event()
        self.writer_lock = threading.Lock()  # held by the lost-history fault to write alone
        self.ops = {"workload": 0, "txn_docs": 0, "txns": 0, "large": 0, "write_errors": 0}
        self.history_events = 1500
        self.run_gen = 0

    # -- servers --

    def start_redis(self):
        if not hasattr(self, "redis_port"):
            self.redis_port = free_port()
        rdir = os.path.join(self.dir, "redis")
        os.makedirs(rdir, exist_ok=True)
        self.procs["redis"] = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", rdir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile",
             os.path.join(rdir, "redis.log")], stdout=subprocess.DEVNULL)
        for _ in range(200):
            if self.redis("PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start on %d" % self.redis_port)

    def redis(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.redis_port)] + list(args),
                           capture_output=True, text=True)
        return r.stdout.strip()

    def start_double(self):
        out = open(os.path.join(self.dir, "double.out"), "w")
        errf = open(os.path.join(self.dir, "double.log"), "w")
        self.procs["double"] = subprocess.Popen(
            [self.double, "--port", "0", "--history-events", str(self.history_events)],
            stdout=out, stderr=errf)
        for _ in range(100):
            with open(os.path.join(self.dir, "double.out")) as f:
                text = f.read()
            if "ready port=" in text:
                port = int(text.split("ready port=")[1].split()[0])
                self.mongo_uri = "mongodb://127.0.0.1:%d/?replicaSet=rs0" % port
                self.mongo = pymongo.MongoClient(self.mongo_uri, serverSelectionTimeoutMS=20000)
                self.admin = pymongo.MongoClient("mongodb://127.0.0.1:%d/?directConnection=true" % port)
                return
            time.sleep(0.1)
        raise RuntimeError("the MongoDB double did not start")

    def env(self):
        # Only the settings below: the controller's own FTSYNC_* variables are no settings.
        e = {k: v for k, v in os.environ.items() if not k.startswith("FTSYNC_")}
        e.update({
            "FTSYNC_ENV_FILE": "/dev/null",
            "FTSYNC_STATE_REDIS_URL": "redis://127.0.0.1:%d/0" % self.redis_port,
            "FTSYNC_ES_URL": "http://127.0.0.1:%d" % self.proxy.port,
            "FTSYNC_ES_INDEX": self.index,
            "FTSYNC_ES_INDEX_DEFINITION": os.path.join(self.source, "deploy/index/apps.json"),
            "FTSYNC_MONGO_URI": self.mongo_uri,
            "FTSYNC_MONGO_DB": "chaos",
            "FTSYNC_MONGO_COLLECTION": "apps",
            "FTSYNC_PIPELINE": self.pipeline,
            "FTSYNC_ID_FIELD": self.id_field,
            "FTSYNC_FIELDS": ",".join(FIELDS),
            "FTSYNC_ADMIN_ADDR": "127.0.0.1:0",
        })
        return e

    def ftsync_cmd(self, *args, timeout=300):
        return subprocess.run([self.ftsync] + list(args), env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def start_ftsync(self, which):
        logf = open(os.path.join(self.dir, "%s.log" % which), "a")
        cmd = "run" if which == "run" else "load"
        self.procs[which] = subprocess.Popen([self.ftsync, cmd], env=self.env(), stdout=logf,
                                             stderr=logf, start_new_session=True)

    def stop_ftsync(self, which, sig=signal.SIGTERM, wait=True):
        p = self.procs.get(which)
        if p and p.poll() is None:
            p.send_signal(sig)
            if wait:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    log("%s did not stop within 30 s of %s: killed" % (which, sig.name))
                    p.kill()
                    p.wait()

    def ensure_running(self):
        for which in ("run", "load2"):
            p = self.procs.get(which)
            if p is None or p.poll() is not None:
                if p is not None and p.returncode not in (0, -9, -15):
                    log("%s had exited with status %s; started again" % (which, p.returncode))
                self.start_ftsync(which)

    # -- process tree --

    @staticmethod
    def children(pid):
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    with open("/proc/%s/cmdline" % entry, "rb") as f:
                        out.append((int(entry), f.read().split(b"\0")))
            except (OSError, ValueError, IndexError):
                pass
        return out

    def child_of_run(self, command):
        run = self.procs.get("run")
        if not run or run.poll() is not None:
            return None
        for pid, argv in self.children(run.pid):
            if len(argv) > 1 and argv[1] == command.encode():
                return pid
        return None

    # -- the workload --

    def workload_loop(self):
        chunk = 0
        while not self.stop_writing.is_set():
            chunk += 1
            with self.writer_lock:
                pass
            args = [self.workload, "--uri", self.mongo_uri, "--db", "chaos", "--collection", "apps",
                    "--count", "200", "--rate", "150", "--seed", str(self.seed * 1000 + chunk),
                    "--mix", "insert=40,update=30,replace=10,delete=20",
                    "--id-start", str(10 + chunk * 100_000)]
            if self.id_field == "id":
                args.append("--object-ids")
            r = subprocess.run(args, capture_output=True, text=True)
            if r.returncode == 0:
                self.ops["workload"] += 200
            else:
                self.ops["write_errors"] += 1

    def txn_loop(self):
        rng = random.Random(self.seed + 1)
        coll = self.mongo.chaos.apps
        n = 0
        while not self.stop_writing.is_set():
            with self.writer_lock:
                try:
                    self.one_txn(rng, coll, n)
                except PyMongoError:
                    self.ops["write_errors"] += 1
            n += 1
            time.sleep(rng.uniform(0.1, 0.5))

    def doc(self, rng, i, large=False):
        appid = TXN_ID_BASE + i * 10
        d = {
            "id": appid,
            "name": rng.choice(["Café Ωmega ", "Железо ", "東京 ", "한국어 ", "🎮 "]) + str(rng.random()),
            "developers": ["dev %d" % rng.randrange(100)],
            "publishers": [],
            "updated_at": bson.datetime.datetime.fromtimestamp(rng.randrange(1_600_000_000, 1_700_000_000),
                                                               tz=bson.tz_util.utc),
        }
        d["short_description"] = ("Größe ✓ " * rng.randrange(25_000, 75_000)) if large else "small é"
        d["_id"] = bson.ObjectId("f75d%020x" % appid) if self.id_field == "id" else appid
        return d

    def one_txn(self, rng, coll, n):
        kind = rng.random()
        if kind < 0.15:  # a large document, alone
            coll.replace_one({"_id": self.doc(rng, n % 50)["_id"]}, self.doc(rng, n % 50, large=True),
                             upsert=True)
            self.ops["large"] += 1
            return
        with self.mongo.start_session() as s:
            with s.start_transaction():
                for _ in range(rng.randrange(2, 6)):
                    i = rng.randrange(400)
                    d = self.doc(rng, i)
                    op = rng.random()
                    if op < 0.6:
                        coll.replace_one({"_id": d["_id"]}, d, upsert=True, session=s)
                    elif op < 0.8:
                        coll.update_one({"_id": d["_id"]}, {"$set": {"name": d["name"]}}, session=s)
                    else:
                        coll.delete_one({"_id": d["_id"]}, session=s)
                    self.ops["txn_docs"] += 1
        self.ops["txns"] += 1

    # -- faults --

    def fail_point(self, name, mode, data):
        self.admin.admin.command({"configureFailPoint": name, "mode": mode, "data": data})

    def fault(self, kind):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "kill9_supervisor":
            self.stop_ftsync("run", signal.SIGKILL)
            time.sleep(self.rng.uniform(0.2, 2))
        elif kind in ("kill9_extract", "kill9_worker"):
            extract = self.child_of_run("extract")
            pid = extract
            if kind == "kill9_worker" and extract:
                kids = self.children(extract)
                pid = kids[0][0] if kids else None
            if pid:
                os.kill(pid, signal.SIGKILL)
            else:
                log("  (no %s process at this moment: counted, nothing killed)" % kind[6:])
                self.counts[kind + "_missed"] = self.counts.get(kind + "_missed", 0) + 1
        elif kind == "kill9_loader":
            if self.rng.random() < 0.5:
                pid = self.child_of_run("load")
                if pid:
                    os.kill(pid, signal.SIGKILL)
            else:
                self.stop_ftsync("load2", signal.SIGKILL)
        elif kind == "sigterm_rolling":
            self.stop_ftsync("load2")
            self.start_ftsync("load2")
            time.sleep(1)
            self.stop_ftsync("run")
            self.start_ftsync("run")
        elif kind == "es_outage":
            secs = self.rng.uniform(*self.outage_s)
            log("  search engine away for %.1f s" % secs)
            self.proxy.down()
            time.sleep(secs)
            self.proxy.up()
        elif kind == "redis_restart_aof":
            p = self.procs["redis"]
            p.kill()
            p.wait()
            time.sleep(self.rng.uniform(0.2, 3))
            self.start_redis()
        elif kind == "redis_restart_empty":
            # Redis restarted without persistence: everything ftsync kept there is gone (token,
            # stream, group, id map, lease). Extract must see the loss (its epoch marker),
            # refuse to write its remembered token back, and resync; loaders recreate the group.
            p = self.procs["redis"]
            p.kill()
            p.wait()
            shutil.rmtree(os.path.join(self.dir, "redis"), ignore_errors=True)
            time.sleep(self.rng.uniform(0.2, 3))
            self.start_redis()
        elif kind == "fp_close_connection":
            self.fail_point("failCommand", {"times": self.rng.randrange(1, 4)},
                            {"failCommands": ["getMore", "aggregate"], "closeConnection": True})
        elif kind == "fp_getmore_resumable":
            self.fail_point("failGetMoreAfterCursorCheckout", {"times": self.rng.randrange(1, 4)},
                            {"errorCode": self.rng.choice([6, 89, 91, 10107, 11600])})
        elif kind == "fp_block_connection":
            self.fail_point("failCommand", {"times": self.rng.randrange(1, 3)},
                            {"failCommands": ["getMore", "aggregate"], "blockConnection": True,
                             "blockTimeMS": self.rng.randrange(500, 5000)})
        elif kind == "step_down":
            self.admin.admin.command({"replSetStepDown": 10, "force": True})
            time.sleep(self.rng.uniform(1, 5))
            try:
                self.admin.admin.command({"replSetStepUp": 1})
            except PyMongoError as e:
                log("  replSetStepUp: %s" % e)
        elif kind == "history_lost":
            # ftsync away while more changes than the double keeps are written: extract's
            # saved position is gone from the history when it comes back.
            with self.writer_lock:
                self.stop_ftsync("run", signal.SIGKILL)
                coll = self.mongo.chaos.apps
                base = 500_000 + self.counts[kind] * 10_000
                docs = [self.doc(self.rng, base + i) for i in range(self.history_events + 200)]
                for d in docs:
                    coll.replace_one({"_id": d["_id"]}, d, upsert=True)
                self.ops["txn_docs"] += len(docs)
                # leave some of them behind deleted, the rest updated again
                for d in docs[::3]:
                    coll.delete_one({"_id": d["_id"]})
                self.ops["txn_docs"] += len(docs[::3])
        self.ensure_running()

    KINDS = ["kill9_supervisor", "kill9_extract", "kill9_worker", "kill9_loader", "sigterm_rolling",
             "es_outage", "redis_restart_aof", "redis_restart_empty", "fp_close_connection",
             "fp_getmore_resumable", "fp_block_connection", "step_down", "history_lost"]

    def schedule(self):
        """Every kind at least once (shuffled), then random kinds; the slow ones (a lost
        history, the search engine outage, and Redis losing its data, which costs a resync of the
        whole collection) are drawn four times less often than the others."""
        kinds = list(self.KINDS)
        self.rng.shuffle(kinds)
        while len(kinds) < self.faults:
            k = self.rng.choice(self.KINDS)
            if k in ("history_lost", "es_outage", "redis_restart_empty") and self.rng.random() < 0.75:
                continue
            kinds.append(k)
        return kinds[: max(self.faults, 0)]

    # -- the end state --

    def group_info(self):
        """The loaders group's XINFO GROUPS fields, plus "drained": nothing pending and nothing
        left to deliver. Redis's own lag is not trusted for the latter: 7.0 can keep a stale
        entries-read after an AOF restart (a drained group of the long form showed lag 30589
        with an empty stream), so the group's last-delivered-id is compared with the stream's
        last-generated-id."""
        stream = "ftsync:{%s}:stream" % self.pipeline
        raw = self.redis("XINFO", "GROUPS", stream).split("\n")
        info = {}
        for k, v in zip(raw[::2], raw[1::2]):
            info[k] = v
        raw = self.redis("XINFO", "STREAM", stream).split("\n")
        last_generated = dict(zip(raw[::2], raw[1::2])).get("last-generated-id")
        info["drained"] = info.get("pending") == "0" and (
            info.get("lag") == "0" or info.get("last-delivered-id") == last_generated)
        return info

    def expected(self):
        out = {}
        for d in self.mongo.chaos.apps.find({}):
            key = d[self.id_field]
            key = str(key) if not isinstance(key, bson.ObjectId) else str(key)
            out[key] = {f: d.get(f) for f in FIELDS}
        return out

    @staticmethod
    def to_json_value(v):
        if hasattr(v, "isoformat") and hasattr(v, "microsecond"):
            return v.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (v.microsecond // 1000)
        return v

    def index_docs(self):
        base = "http://127.0.0.1:%d" % self.proxy.port
        req = urllib.request.Request("%s/%s/_refresh" % (base, self.index), method="POST")
        urllib.request.urlopen(req, timeout=60).read()
        out = {}
        body = json.dumps({"size": 1000, "sort": ["_doc"]}).encode()
        req = urllib.request.Request("%s/%s/_search?scroll=1m" % (base, self.index), data=body,
                                     headers={"Content-Type": "application/json"})
        page = json.load(urllib.request.urlopen(req, timeout=60))
        while page["hits"]["hits"]:
            for h in page["hits"]["hits"]:
                out[h["_id"]] = h["_source"]
            body = json.dumps({"scroll": "1m", "scroll_id": page["_scroll_id"]}).encode()
            req = urllib.request.Request("%s/_search/scroll" % base, data=body,
                                         headers={"Content-Type": "application/json"})
            page = json.load(urllib.request.urlopen(req, timeout=60))
        return out

    def compare(self):
        want = self.expected()
        have = self.index_docs()
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        stale = []
        for k in set(want) & set(have):
            # nothing but the projected fields and the loader's namespace mark
            if set(have[k]) - set(FIELDS) - {"_ftsync_ns"} or have[k].get("_ftsync_ns") not in (
                    None, "chaos.apps"):
                stale.append((k, "_source keys %s" % sorted(have[k])))
                continue
            for f in FIELDS:
                a = self.to_json_value(want[k].get(f))
                b = have[k].get(f)
                if a != b and not (a is None and f not in have[k]):
                    stale.append((k, f))
                    break
        return len(want), missing, extra, stale

    def recoveries_logged(self):
        """How often ftsync's own logs say it took each recovery path: evidence that the faults
        reached the code they were meant for, not only that the end state matched."""
        text = ""
        for which in ("run", "load2"):
            try:
                with open(os.path.join(self.dir, "%s.log" % which), errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return {
            "Redis data loss seen": text.count("Redis lost its data"),
            "history-lost resyncs": text.count("change stream history lost: resyncing"),
            # the first, each resync's, and one after a Redis emptied while no extractor ran:
            # every one ends with a sweep
            "snapshots": text.count("no saved position: snapshot"),
            "group recreated": text.count("the queue Redis lost the consumer group: recreated"),
            "worker restarts": text.count("transform worker ended; restarting it")
            + text.count("transform worker killed from outside")
            + text.count("transform worker crashed; restarting it"),
        }

    def dead_letters(self):
        """The dead-letter stream's entries as (entry id, {field: value})."""
        raw = subprocess.run(["redis-cli", "-2", "--json", "-p", str(self.redis_port), "XRANGE",
                              "ftsync:{%s}:dead" % self.pipeline, "-", "+"],
                             capture_output=True, text=True, check=True).stdout
        return [(entry_id, dict(zip(fields[::2], fields[1::2])))
                for entry_id, fields in json.loads(raw or "[]")]

    # -- the run --

    def main(self):
        log("seed %d (FTSYNC_CHAOS_SEED=%d replays it), %d faults, id field %s, scratch %s"
            % (self.seed, self.seed, self.faults, self.id_field, self.dir))
        tb = read_env_file(os.path.join(self.testbed, "testbed.env"))
        es = os.environ.get("FTSYNC_TEST_ES_URL") or tb["FTSYNC_TEST_OPENSEARCH_URL"]
        host, port = es.split("//")[1].rstrip("/").split(":")
        self.proxy = EsProxy(host, int(port))
        self.pipeline = "chaos-%d" % os.getpid()
        self.index = "chaos-%d" % os.getpid()
        started = time.monotonic()
        try:
            self.start_redis()
            self.start_double()
            r = self.ftsync_cmd("init-index")
            if r.returncode != 0:
                log("init-index failed: %s" % r.stderr)
                return 1
            self.start_ftsync("run")
            self.start_ftsync("load2")
            writers = [threading.Thread(target=self.workload_loop, daemon=True),
                       threading.Thread(target=self.txn_loop, daemon=True)]
            for w in writers:
                w.start()
            time.sleep(3)
            for n, kind in enumerate(self.schedule(), 1):
                time.sleep(self.rng.uniform(0.5, 4))
                log("fault %d/%d: %s" % (n, self.faults, kind))
                self.fault(kind)
            time.sleep(2)
            self.stop_writing.set()
            for w in writers:
                w.join(timeout=120)
            self.ensure_running()
            self.stopped = time.monotonic()
            log("workload stopped after %.0f s; draining" % (self.stopped - started))
            return self.drain_and_check(started)
        finally:
            for which in ("load2", "run"):
                self.stop_ftsync(which)
            for which in ("double", "redis"):
                p = self.procs.get(which)
                if p and p.poll() is None:
                    p.terminate()
                    p.wait()

    def drain_and_check(self, started):
        deadline = time.monotonic() + 300
        result = None
        settled_since = time.monotonic()
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(3)
            info = self.group_info()
            if time.monotonic() - last_note > 15:
                last_note = time.monotonic()
                log("  draining: group pending %s lag %s; last comparison %s" % (
                    info.get("pending"), info.get("lag"),
                    "none yet" if not result else "missing %d extra %d stale %d" % tuple(map(len, result[1:]))))
            if not info["drained"]:
                continue
            try:
                previous, result = result, self.compare()
            except (OSError, ValueError, KeyError) as e:
                log("comparison failed for now: %s" % e)
                continue
            if not (result[1] or result[2] or result[3]):
                break
            # Drained (nothing pending, no lag) and the same difference for 60 s: it stays.
            if previous != result:
                settled_since = time.monotonic()
            elif time.monotonic() - settled_since > 60:
                break
        drained = time.monotonic()
        if result is None:  # never drained: compare what there is, to say what differs
            try:
                result = self.compare()
            except (OSError, ValueError, KeyError) as e:
                log("comparison failed: %s" % e)
        verify = self.ftsync_cmd("verify")
        info = self.group_info()
        dead = self.dead_letters()
        total, missing, extra, stale = result if result else (0, ["?"], ["?"], ["?"])
        ok = True
        print("\n== chaos suite: seed %d, id field %s" % (self.seed, self.id_field))
        print("%-24s %s" % ("fault", "count"))
        for k in self.KINDS:
            print("%-24s %d" % (k, self.counts.get(k, 0)))
        for k in sorted(self.counts):
            if k.endswith("_missed"):
                print("%-24s %d" % (k, self.counts[k]))
        print("%-24s %d" % ("faults total", sum(v for k, v in self.counts.items() if not k.endswith("_missed"))))
        print("changes written          %d (workload %d in complete chunks, %d in %d transactions and"
              " history-loss bursts, %d large documents; %d writes refused during faults)"
              % (self.ops["workload"] + self.ops["txn_docs"] + self.ops["large"], self.ops["workload"],
                 self.ops["txn_docs"], self.ops["txns"], self.ops["large"], self.ops["write_errors"]))
        print("documents compared       %d" % total)
        print("missing / extra / stale  %d / %d / %d" % (len(missing), len(extra), len(stale)))
        print("group pending / lag      %s / %s (%s)" % (info.get("pending"), info.get("lag"),
              "drained" if info["drained"] else "NOT drained"))
        print("ftsync verify            exit %d (%s)" % (verify.returncode, " / ".join(
            l.strip() for l in verify.stdout.splitlines() if l.startswith(("checked", "missing", "stale", "extra")))))
        print("dead letters             %d" % len(dead))
        print("recoveries in the logs   %s" % ", ".join(
            "%s %d" % kv for kv in self.recoveries_logged().items()))
        print("time                     %.0f s (drain %.0f s)" % (drained - started, drained - self.stopped))
        if missing or extra or stale:
            ok = False
            print("MISMATCH missing %s extra %s stale %s" % (missing[:10], extra[:10], stale[:10]))
        if not info["drained"]:
            ok = False
            print("the group still has pending entries or lag: %s" % info)
        if verify.returncode != 0:
            ok = False
            print("ftsync verify disagrees (exit %d):\n%s%s" % (verify.returncode, verify.stdout, verify.stderr))
        # verify must have compared the documents' contents, not only their ids: the workload
        # writes nothing the transform refuses, so "not indexable" means verify checked nothing.
        if "not indexable" in verify.stdout:
            ok = False
            print("ftsync verify compared ids only: it found every document not indexable:\n%s"
                  % verify.stdout)
        # No injected fault explains a dead letter: the workload writes nothing the transform
        # refuses and no two documents share an id, an outage or a kill is never counted as a
        # delivery, and a delete the id map does not know after a resync is counted, not
        # dead-lettered (README, "The id map"). So every dead letter fails the run, shown with
        # its reason.
        if dead:
            ok = False
            print("dead letters, which no injected fault explains:")
            for entry_id, fields in dead[:10]:
                print("  %s %s" % (entry_id, json.dumps(fields)[:1500]))
        print("RESULT: %s" % ("PASS" if ok else "FAIL (logs in %s)" % self.dir))
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        return 0 if ok else 1


if __name__ == "__main__":
    try:
        chaos = Chaos()
    except UsageError as e:
        print("chaos.py: %s" % e, file=sys.stderr)
        sys.exit(2)
    sys.exit(chaos.main())
