#!/usr/bin/python3
"""simulate_pods.py - the strongest check of the Kubernetes manifests this machine allows: no
cluster and no container engine run here, so the pods are played by local processes.

  1. render   `kubectl kustomize` the kustomization (fails clearly when kubectl is missing),
              and the optional components on top of the base; load the reset-token Jobs.
  2. schemas  every object validated against the Kubernetes OpenAPI schemas (npm
              kubernetes-models; the ServiceMonitor against @kubernetes-models/prometheus-operator).
  3. rules    what the manifests promise (README.md, Deployment): security contexts, probes on
              /healthz and /readyz at a named port the container declares, an emptyDir at /tmp,
              resources, terminationGracePeriodSeconds above FTSYNC_STOP_TIMEOUT_MS, the
              extractor strategy never running more than its replicas, the consumer name from
              the downward API, PDBs, the Service, the NetworkPolicy's ports.
  4. config   every FTSYNC_ variable the manifests set is a setting `ftsync config --help` lists,
              and `ftsync config` exits 0 with each container's environment in dev mode (the
              CHANGE-ME placeholders), and 2 without it (ftsync refuses the placeholders).
  5. pods     each Deployment's container command + args, replica by replica, as a local process
              (the built ftsync for the image's ENTRYPOINT) with the environment the manifest
              gives it: ConfigMap and Secret values resolved, Secret files written where the
              volume mounts put them under a scratch root (mount paths, the image's files and the
              *_FILE variables rewritten to it), downward-API values filled in. Pointed at the
              test bed's Redis and Elasticsearch and a MongoDB double the test starts (the
              endpoint settings, the pipeline and index names, the admin port and the ES 1.5
              document type are overridden; the list is printed). Checks: the index reaches
              the collection's documents, one extractor holds the lease and one waits, each
              loader is a consumer named after its pod; then, per --check:
       pods   SIGTERM ends every process within terminationGracePeriodSeconds, exit 0.
       probes each pod's startup, liveness and readiness probes (path and port) answer 200
              within the probe's own timing; the standby extractor is ready too.
       job    the extractor "scaled to 0" (its pods stopped), the reset-token Job's command runs
              with the Job's environment and exits 0, and the saved position is gone; the
              --to-time Job (its time replaced by one inside the double's history) exits 0 and
              the position shows that time.

usage: simulate_pods.py --source DIR --kustomization REL --check pods|probes|job --ftsync BIN
         --double BIN --workload BIN --testbed-env FILE --scratch DIR [--documents N]
Each pod's peak RSS (VmHWM of the process and its children) is printed; README.md's resource
figures come from a release build with --documents 20000.
Exit 0 when every check passed; 1 otherwise, with one FAIL line per failed check.
"""
import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

failures = []
ADMIN_MISSING = "the admin endpoint does not answer"


def check(ok, what, detail=""):
    print(("ok    " if ok else "FAIL  ") + what + (f": {detail}" if detail and not ok else ""),
          flush=True)
    if not ok:
        failures.append(what)
    return ok


def fatal(message):
    print(f"FAIL  {message}", flush=True)
    print("simulate_pods: FAILED")
    sys.exit(1)


def say(message):
    print(f"--    {message}", flush=True)


# ------------------------------------------------------------------------------------------
# 1-2: render and validate


def kustomize(path):
    if not shutil.which("kubectl"):
        fatal("kubectl is not installed: the test renders the manifests with `kubectl kustomize` "
              "(kubectl ships kustomize); install kubectl 1.27 or later")
    result = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    if result.returncode != 0:
        fatal(f"kubectl kustomize {path}: {result.stderr.strip()}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render_all(source, kustomization, scratch):
    objects = kustomize(os.path.join(source, kustomization))
    check(bool(objects), f"kubectl kustomize {kustomization} renders objects")
    extras = []
    components_dir = os.path.join(source, "deploy", "k8s", "components")
    for component in sorted(os.listdir(components_dir)):
        # The component on top of this kustomization, the way an overlay adds it.
        tmp = os.path.join(scratch, "with-" + component)
        os.makedirs(tmp, exist_ok=True)
        with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
            yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                            "resources": [os.path.relpath(os.path.join(source, kustomization), tmp)],
                            "components": [os.path.relpath(os.path.join(components_dir, component), tmp)]},
                           f)
        with_component = kustomize(tmp)
        names = {(o["kind"], o["metadata"]["name"]) for o in objects}
        added = [o for o in with_component if (o["kind"], o["metadata"]["name"]) not in names]
        check(bool(added), f"component {component} renders on top of {kustomization}")
        extras += added
    jobs = []
    jobs_dir = os.path.join(source, "deploy", "k8s", "jobs")
    for name in sorted(os.listdir(jobs_dir)):
        with open(os.path.join(jobs_dir, name)) as f:
            jobs += [d for d in yaml.safe_load_all(f) if d]
    return objects, extras, jobs


def validate_schemas(objects, scratch):
    tools = os.environ.get("FTSYNC_K8S_TOOLS") or \
        os.path.join(os.environ.get("FTSYNC_DEPS_DIR") or "/opt/ftsync-deps", "k8s-tools")
    if not os.path.isdir(os.path.join(tools, "node_modules", "kubernetes-models")):
        fatal(f"the npm tools are not installed in {tools}: run test/k8s/install-tools.sh")
    normalised = json.loads(json.dumps(objects))
    for o in normalised:
        # kustomize wraps long base64 values over several lines; the API server's decoder
        # (Go's encoding/base64) skips the newlines, the schema's "byte" format does not.
        if o.get("kind") == "Secret" and isinstance(o.get("data"), dict):
            o["data"] = {k: re.sub(r"\s", "", v) for k, v in o["data"].items()}
    path = os.path.join(scratch, "objects.json")
    with open(path, "w") as f:
        json.dump(normalised, f)
    here = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(["node", os.path.join(here, "validate_k8s.mjs"), tools, path],
                            capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    check(result.returncode == 0, f"{len(objects)} objects match the Kubernetes OpenAPI schemas",
          result.stderr.strip())


# ------------------------------------------------------------------------------------------
# 3: rules the manifests promise


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).get("matchLabels", {}).items())


def check_pod_spec(what, spec, configmaps):
    pod_sc = spec.get("securityContext", {})
    check(pod_sc.get("runAsNonRoot") is True and (pod_sc.get("runAsUser") or 0) > 0,
          f"{what}: runs as a non-root uid")
    check(pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"{what}: seccomp RuntimeDefault")
    check(spec.get("enableServiceLinks") is False,
          f"{what}: enableServiceLinks false (no injected *_SERVICE_* variables)")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        check(sc.get("allowPrivilegeEscalation") is False, f"{what}: allowPrivilegeEscalation false")
        check(sc.get("readOnlyRootFilesystem") is True, f"{what}: readOnlyRootFilesystem")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{what}: capabilities drop ALL")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        tmp = volumes.get(mounts.get("/tmp", {}).get("name"), {})
        check("emptyDir" in tmp, f"{what}: an emptyDir at /tmp")
        res = c.get("resources", {})
        check(bool(res.get("requests", {}).get("memory")) and bool(res.get("limits", {}).get("memory")),
              f"{what}: memory request and limit")
        stop_ms = None
        for ref in c.get("envFrom", []):
            cm = configmaps.get(ref.get("configMapRef", {}).get("name"), {})
            stop_ms = cm.get("FTSYNC_STOP_TIMEOUT_MS", stop_ms)
        for e in c.get("env", []):
            if e["name"] == "FTSYNC_STOP_TIMEOUT_MS":
                stop_ms = e.get("value")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        check(grace * 1000 > int(stop_ms or 10000) + 5000,
              f"{what}: terminationGracePeriodSeconds {grace} s > FTSYNC_STOP_TIMEOUT_MS "
              f"{stop_ms or 10000} ms + 5 s to settle")


def check_rules(objects, extras, jobs):
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in by_kind(objects, "ConfigMap")}
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    check(set(deployments) == {"ftsync-extract", "ftsync-load"},
          "Deployments ftsync-extract and ftsync-load", sorted(deployments))
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        check_pod_spec(f"Deployment {name}", spec, configmaps)
        c = spec["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for kind, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                           ("readinessProbe", "/readyz")):
            probe = c.get(kind, {}).get("httpGet", {})
            check(probe.get("path") == path and probe.get("port") in ports,
                  f"Deployment {name}: {kind} GET {path} on a declared port", probe)
        addr = configmaps.get("ftsync-config", {}).get("FTSYNC_ADMIN_ADDR", "0.0.0.0:8080")
        check(str(ports.get("admin")) == addr.rsplit(":", 1)[-1],
              f"Deployment {name}: port admin is FTSYNC_ADMIN_ADDR's port", f"{ports} vs {addr}")
        pdbs = [p for p in by_kind(objects, "PodDisruptionBudget")
                if selects(p["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        check(len(pdbs) == 1, f"Deployment {name}: one PodDisruptionBudget")
    extract = deployments.get("ftsync-extract", {}).get("spec", {})
    rolling = extract.get("strategy", {}).get("rollingUpdate", {})
    check(extract.get("replicas") == 2, "ftsync-extract: 2 replicas (active + standby)")
    check(extract.get("strategy", {}).get("type") == "Recreate" or rolling.get("maxSurge") in (0, "0", "0%"),
          "ftsync-extract: a rollout never adds pods beyond the replicas (Recreate or maxSurge 0)")
    load = deployments.get("ftsync-load", {}).get("spec", {})
    check((load.get("replicas") or 0) >= 2, "ftsync-load: 2 replicas or more")
    env = {e["name"]: e for e in load.get("template", {}).get("spec", {}).get("containers", [{}])[0].get("env", [])}
    check(env.get("FTSYNC_CONSUMER_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
          == "metadata.name", "ftsync-load: FTSYNC_CONSUMER_NAME is the pod name (downward API)")
    services = by_kind(objects, "Service")
    check(any(p.get("targetPort") == "admin" for s in services for p in s["spec"]["ports"]),
          "a Service exposes the admin port")
    policies = by_kind(objects, "NetworkPolicy")
    if check(len(policies) == 1, "one NetworkPolicy"):
        p = policies[0]["spec"]
        egress_ports = sorted({q["port"] for rule in p.get("egress", []) for q in rule.get("ports", [])})
        check(egress_ports == [53, 6379, 9200, 27017],
              "NetworkPolicy: egress only to DNS, Redis, Elasticsearch, MongoDB ports", egress_ports)
        ingress = p.get("ingress", [])
        check(len(ingress) == 1 and [q["port"] for q in ingress[0].get("ports", [])] == [8080]
              and ingress[0]["from"][0].get("namespaceSelector", {}).get("matchLabels", {})
              .get("kubernetes.io/metadata.name") == "monitoring",
              "NetworkPolicy: ingress only to 8080 from the monitoring namespace")
    monitors = by_kind(extras, "ServiceMonitor")
    check(len(monitors) == 1 and any(selects(monitors[0]["spec"]["selector"], s["metadata"].get("labels", {}))
                                     for s in services),
          "the ServiceMonitor selects the admin Service")
    hpas = by_kind(extras, "HorizontalPodAutoscaler")
    check(len(hpas) == 1 and hpas[0]["spec"]["scaleTargetRef"]["name"] == "ftsync-load"
          and hpas[0]["spec"]["metrics"][0]["external"]["metric"]["name"] == "ftsync_backlog_entries",
          "the HPA example scales ftsync-load on ftsync_backlog_entries")
    for job in jobs:
        name = job["metadata"]["name"]
        check(job["spec"].get("backoffLimit") == 0, f"Job {name}: backoffLimit 0")
        args = job["spec"]["template"]["spec"]["containers"][0].get("args", [])
        check(args[:1] == ["reset-token"] and "--yes" in args, f"Job {name}: ftsync reset-token ... --yes")
        check_pod_spec(f"Job {name}", job["spec"]["template"]["spec"], configmaps)


# ------------------------------------------------------------------------------------------
# 4-5: pods as local processes


def image_facts(source):
    """ENTRYPOINT and the files the runtime stage copies from the context (image path -> repo
    path), read from the Dockerfile the image is built from."""
    with open(os.path.join(source, "deploy", "docker", "Dockerfile")) as f:
        text = f.read()
    runtime = text[text.rindex("\nFROM "):]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])", runtime, re.M).group(1))
    files = {}
    for src, dst in re.findall(r"^COPY\s+(?!--from)(\S+)\s+(\S+)", runtime, re.M):
        files[dst.rstrip("/")] = os.path.join(source, src.rstrip("/"))
    return entrypoint, files


def known_settings(ftsync):
    out = subprocess.run([ftsync, "config", "--help"], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "FTSYNC_ENV_FILE": "/dev/null"}).stdout
    names = set(re.findall(r"^(FTSYNC_[A-Z0-9_]+) \(", out, re.M))
    if not names:
        fatal("`ftsync config --help` lists no setting")
    return names


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secret_data(secret):
    data = {k: base64.b64decode(re.sub(r"\s", "", v)).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


class Pod:
    """One container of a pod as a local process: its environment, files and probes."""

    def __init__(self, name, owner, spec, objects, root, image_files, entrypoint, ftsync):
        self.name, self.owner, self.spec, self.root = name, owner, spec, root
        self.container = spec["containers"][0]
        self.grace = spec.get("terminationGracePeriodSeconds", 30)
        self.process = None
        self.port_map = {}
        configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in by_kind(objects, "ConfigMap")}
        secrets = {o["metadata"]["name"]: secret_data(o) for o in by_kind(objects, "Secret")}
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        # Volumes, written where the mounts put them, under the scratch root.
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        self.mounts = {}
        for m in self.container.get("volumeMounts", []):
            local = root + m["mountPath"]
            os.makedirs(local, exist_ok=True)
            self.mounts[m["mountPath"]] = local
            v = volumes[m["name"]]
            source = None
            if "secret" in v:
                source = secrets[v["secret"]["secretName"]]
            elif "configMap" in v:
                source = configmaps[v["configMap"]["name"]]
            if source is not None:
                items = (v.get("secret") or v.get("configMap")).get("items") or \
                    [{"key": k, "path": k} for k in source]
                for item in items:
                    with open(os.path.join(local, item["path"]), "w") as f:
                        f.write(source[item["key"]])
        self.image_files = image_files
        # The environment: ConfigMaps and Secrets resolved, the downward API filled in.
        env = {}
        for ref in self.container.get("envFrom", []):
            if "configMapRef" in ref:
                env.update(configmaps[ref["configMapRef"]["name"]])
            if "secretRef" in ref:
                env.update(secrets[ref["secretRef"]["name"]])
        for e in self.container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
                continue
            source = e["valueFrom"]
            if "fieldRef" in source:
                field = source["fieldRef"]["fieldPath"]
                env[e["name"]] = {"metadata.name": name, "metadata.namespace": "simulated"}[field]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[e["name"]] = configmaps[ref["name"]][ref["key"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
        self.manifest_env = dict(env)
        self.env = {k: self.local_path(v) for k, v in env.items()}
        command = self.container.get("command") or entrypoint
        self.argv = [ftsync if command[0] == "ftsync" else command[0]] + command[1:] + \
            self.container.get("args", [])

    def local_path(self, value):
        for mount, local in self.mounts.items():
            if value == mount or value.startswith(mount + "/"):
                return local + value[len(mount):]
        for image_path, repo_path in self.image_files.items():
            if value == image_path or value.startswith(image_path + "/"):
                return repo_path + value[len(image_path):]
        return value

    def process_env(self, extra=None):
        # What a container has besides the manifest's variables: PATH and HOSTNAME (the pod
        # name); the sanitizer options of a sanitizer build pass through.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": self.name}
        env.update({k: v for k, v in os.environ.items() if k.split("_")[0] in ("ASAN", "UBSAN", "LSAN")})
        env.update(self.env)
        env.update(extra or {})
        return env

    def secret_file(self, setting):
        path = self.env.get(setting + "_FILE")
        return path if path and path.startswith(self.root) else None

    def start(self):
        self.log = os.path.join(self.root, "ftsync.log")
        self.started_at = time.time()
        self.process = subprocess.Popen(self.argv, env=self.process_env(), cwd=self.root + "/tmp",
                                        stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def rss_kib(self):
        """VmHWM (peak RSS) of the process and its children (extract's transform worker)."""
        total = 0
        pids = [self.process.pid]
        try:
            with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
            except (OSError, AttributeError):
                pass
        return total


def redis_cli(url, *args):
    return subprocess.run(["redis-cli", "-u", url, *args], capture_output=True, text=True).stdout.strip()


def es_count(es_url, index):
    try:
        urllib.request.urlopen(urllib.request.Request(f"{es_url}/{index}/_refresh", method="POST"), timeout=10).read()
        with urllib.request.urlopen(f"{es_url}/{index}/_count", timeout=10) as r:
            return json.load(r)["count"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None


def http_get(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(200).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(200).decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return None, str(getattr(e, "reason", e))


def check_config(pods, settings, ftsync):
    seen = set()
    for pod in pods:
        if pod.owner in seen:  # replicas share their template
            continue
        seen.add(pod.owner)
        for name in pod.manifest_env:
            if name.startswith("FTSYNC_"):
                base = name[:-5] if name.endswith("_FILE") else name
                check(base in settings, f"{pod.owner}: {name} is a setting ftsync knows")
        role = pod.argv[1] if len(pod.argv) > 1 and pod.argv[1] in ("extract", "load") else None
        argv = [ftsync, "config"] + (["--role", role] if role else [])
        dev = subprocess.run(argv, env=pod.process_env({"FTSYNC_DEV_MODE": "true"}),
                             cwd=pod.root + "/tmp", capture_output=True, text=True)
        check(dev.returncode == 0 and "not a setting" not in dev.stderr,
              f"{pod.owner}: `ftsync config{' --role ' + role if role else ''}` exits 0 without a "
              "warning with the manifest's environment (dev mode, CHANGE-ME placeholders)",
              f"exit {dev.returncode}: {dev.stderr.strip()[-600:]}")
        prod = subprocess.run(argv, env=pod.process_env(), cwd=pod.root + "/tmp",
                              capture_output=True, text=True)
        if any("CHANGE-ME" in v for v in pod.manifest_env.values()) or \
                any("CHANGE-ME" in open(p).read() for p in
                    (pod.env[k] for k in pod.env if k.endswith("_FILE")) if os.path.isfile(p)):
            check(prod.returncode == 2 and "CHANGE-ME" in prod.stderr,
                  f"{pod.owner}: outside dev mode the CHANGE-ME placeholders are refused (exit 2)",
                  f"exit {prod.returncode}: {prod.stderr.strip()[-300:]}")


def point_at_testbed(pod, bed, overrides):
    """The test-bed adaptations, applied to a pod's environment and secret files."""
    if pod.secret_file("FTSYNC_MONGO_URI"):
        with open(pod.secret_file("FTSYNC_MONGO_URI"), "w") as f:
            f.write(bed["mongo_uri"])
    if pod.secret_file("FTSYNC_STATE_REDIS_URL"):
        with open(pod.secret_file("FTSYNC_STATE_REDIS_URL"), "w") as f:
            f.write(bed["redis_url"])
    if pod.secret_file("FTSYNC_ES_USER"):
        with open(pod.secret_file("FTSYNC_ES_USER"), "w") as f:
            f.write("ftsync")
    if pod.secret_file("FTSYNC_ES_PASSWORD"):
        with open(pod.secret_file("FTSYNC_ES_PASSWORD"), "w") as f:
            f.write("test-bed-es-has-no-auth")
    pod.env.update(overrides)
    if pod.env.get("FTSYNC_ADMIN_ADDR", "") != "off":
        # Every pod has its own network namespace in a cluster; here each gets its own port.
        port = free_port()
        pod.env["FTSYNC_ADMIN_ADDR"] = f"127.0.0.1:{port}"
        for p in pod.container.get("ports", []):
            pod.port_map[p["name"]] = port
            pod.port_map[p["containerPort"]] = port


def start_double(double, scratch):
    out = os.path.join(scratch, "double.out")
    process = subprocess.Popen([double, "--port", "0"], stdout=open(out, "w"),
                               stderr=open(os.path.join(scratch, "double.log"), "w"))
    for _ in range(100):
        with open(out) as f:
            m = re.search(r"ready port=(\d+)", f.read())
        if m:
            return process, int(m.group(1))
        time.sleep(0.1)
    process.kill()
    fatal("the MongoDB double did not start")


def collection_count(uri, db, collection):
    import pymongo  # Debian's python3-pymongo, as the other integration tests use it
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        return client[db][collection].count_documents({})
    finally:
        client.close()


def wait_in_step(pods, bed, db, collection, index, timeout=180):
    expected = collection_count(bed["mongo_uri"], db, collection)
    deadline = time.time() + timeout
    indexed = None
    while time.time() < deadline:
        dead = [p for p in pods if p.process.poll() is not None]
        if dead:
            for p in dead:
                print(p.log_text()[-1500:])
            return check(False, "every pod keeps running",
                         ", ".join(f"{p.name} exited {p.process.returncode}" for p in dead))
        indexed = es_count(bed["es_url"], index)
        if indexed == expected:
            break
        time.sleep(0.5)
    return check(indexed == expected, f"the index holds the collection's {expected} documents",
                 f"index has {indexed}")


def stop(pods, what):
    for p in pods:
        if p.process.poll() is None:
            p.process.send_signal(signal.SIGTERM)
    start = time.time()
    for p in pods:
        try:
            p.process.wait(timeout=max(0.1, start + p.grace - time.time()))
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.time() - start
        ok = p.process.returncode == 0
        if not check(ok, f"{what}: SIGTERM ends {p.name} within terminationGracePeriodSeconds "
                         f"({p.grace} s) with exit 0",
                     f"exit {p.process.returncode} after {elapsed:.1f} s"):
            print(p.log_text()[-1500:])
        if p.process.poll() is None:
            p.process.kill()
            p.process.wait()


def probe_pods(pods):
    """Each probe of each pod, with the probe's own path, port and timing: the startup probe
    gets initialDelaySeconds + periodSeconds x failureThreshold from the pod's start (as the
    kubelet gives it), liveness and readiness must then answer within periodSeconds x
    failureThreshold. The standby extractor must be ready too."""
    for p in pods:
        started_ok = True
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = p.container.get(kind)
            get = probe["httpGet"]
            port = p.port_map.get(get["port"])
            url = f"http://127.0.0.1:{port}{get['path']}"
            what = f"{p.name}: {kind} GET {get['path']} (port {get['port']}) answers 200"
            if not started_ok:
                check(False, what, "not reached: the startup probe never succeeded")
                continue
            timeout = probe.get("timeoutSeconds", 1)
            period = probe.get("periodSeconds", 10)
            if kind == "startupProbe":
                deadline = p.started_at + probe.get("initialDelaySeconds", 0) + \
                    period * probe.get("failureThreshold", 3)
            else:
                deadline = time.time() + period * probe.get("failureThreshold", 3)
            status, body = http_get(url, timeout)
            while status != 200 and time.time() < deadline and p.process.poll() is None:
                time.sleep(min(1, period))
                status, body = http_get(url, timeout)
            detail = f"HTTP {status}: {body[:200]}" if status else \
                f"{get['path']} not served on 127.0.0.1:{port} ({body}): {ADMIN_MISSING}"
            ok = check(status == 200, what, detail)
            if kind == "startupProbe":
                started_ok = ok


def run_job(job, objects, args, bed, overrides, scratch, arg_rewrite=None):
    spec = job["spec"]["template"]["spec"]
    entrypoint, image_files = image_facts(args.source)
    pod = Pod(job["metadata"]["name"] + "-x7k2p", f"Job {job['metadata']['name']}", spec, objects,
              os.path.join(scratch, "pods", job["metadata"]["name"]), image_files, entrypoint, args.ftsync)
    point_at_testbed(pod, bed, overrides)
    if arg_rewrite:
        pod.argv = arg_rewrite(pod.argv)
    say(f"Job {job['metadata']['name']}: {' '.join(pod.argv[1:])}")
    result = subprocess.run(pod.argv, env=pod.process_env(), cwd=pod.root + "/tmp",
                            capture_output=True, text=True, timeout=job["spec"].get("activeDeadlineSeconds", 300))
    sys.stdout.write(result.stdout)
    detail = " / ".join(result.stderr.strip().splitlines()[:3])[-600:]
    check(result.returncode == 0, f"Job {job['metadata']['name']}: `ftsync {' '.join(pod.argv[1:])}` exits 0",
          f"exit {result.returncode}: {detail}")
    return pod, result


def main():
    ap = argparse.ArgumentParser()
    for name in ("source", "kustomization", "ftsync", "double", "workload", "testbed-env", "scratch"):
        ap.add_argument("--" + name, required=True)
    ap.add_argument("--check", choices=("pods", "probes", "job"), required=True)
    ap.add_argument("--documents", type=int, default=500,
                    help="documents written before the pods start (more to measure peak RSS)")
    args = ap.parse_args()
    for name in ("source", "ftsync", "double", "workload", "testbed_env", "scratch"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    label = re.sub(r"[^a-z0-9]+", "-", args.kustomization.lower()).strip("-")
    scratch = os.path.abspath(os.path.join(args.scratch, f"{label}-{args.check}"))
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)

    objects, extras, jobs = render_all(args.source, args.kustomization, scratch)
    if args.check == "pods":
        validate_schemas(objects + extras + jobs, scratch)
        check_rules(objects, extras, jobs)

    entrypoint, image_files = image_facts(args.source)
    settings = known_settings(args.ftsync)
    pods = []
    for d in by_kind(objects, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        for i in range(d["spec"].get("replicas", 1)):
            name = f"{d['metadata']['name']}-6d9f8b7c5-{i}"
            pods.append(Pod(name, f"Deployment {d['metadata']['name']}", spec, objects,
                            os.path.join(scratch, "pods", name), image_files, entrypoint, args.ftsync))
    if args.check == "pods":
        check_config(pods, settings, args.ftsync)
        job_pods = [Pod(j["metadata"]["name"], f"Job {j['metadata']['name']}", j["spec"]["template"]["spec"],
                        objects, os.path.join(scratch, "pods", j["metadata"]["name"]), image_files,
                        entrypoint, args.ftsync) for j in jobs]
        check_config(job_pods, settings, args.ftsync)

    if not os.path.isfile(args.testbed_env):
        fatal(f"no test bed: {args.testbed_env} is missing (ctest starts the test bed through the "
              "`testbed` fixture; by hand: test/tools/testbed.sh start DIR)")
    with open(args.testbed_env) as f:
        bed_env = dict(line.strip().split("=", 1) for line in f if "=" in line and not line.startswith("#"))
    double, mongo_port = start_double(args.double, scratch)
    started = []
    try:
        cm = by_kind(objects, "ConfigMap")[0]["data"]
        db, collection = cm["FTSYNC_MONGO_DB"], cm["FTSYNC_MONGO_COLLECTION"]
        bed = {"mongo_uri": f"mongodb://127.0.0.1:{mongo_port}/?replicaSet=rs0",
               "redis_url": bed_env["FTSYNC_TEST_REDIS_URL"], "es_url": bed_env["FTSYNC_TEST_OPENSEARCH_URL"]}
        unique = f"k8s-{label}-{args.check}-{os.getpid()}"
        overrides = {"FTSYNC_ES_URL": bed["es_url"], "FTSYNC_PIPELINE": unique, "FTSYNC_ES_INDEX": unique,
                     # The test bed's default engine, OpenSearch 2.19: typeless (an empty value
                     # counts as unset), the modern index definition the image ships.
                     "FTSYNC_ES_DOC_TYPE": "",
                     "FTSYNC_ES_INDEX_DEFINITION": os.path.join(args.source, "deploy", "index", "apps.json")}
        if "FTSYNC_ES_ALIAS" in cm:
            overrides["FTSYNC_ES_ALIAS"] = unique + "-alias"
        say("test-bed adaptations: the Secret files' MongoDB and Redis URLs and ES password, "
            + ", ".join(f"{k}={v}" for k, v in overrides.items()) + ", FTSYNC_ADMIN_ADDR=127.0.0.1:<a port per pod>")
        workload = [args.workload, "--uri", bed["mongo_uri"], "--db", db, "--collection", collection]
        subprocess.run(workload + ["--count", str(args.documents), "--mix", "insert=100", "--seed", "3"],
                       check=True, capture_output=True)
        for p in pods:
            point_at_testbed(p, bed, overrides)
            p.start()
            started.append(p)
            say(f"started {p.name}: {' '.join(p.argv[1:])} (log {p.log})")
        in_step = wait_in_step(pods, bed, db, collection, unique)
        # A time inside the double's history, with changes after it, for the --to-time Job.
        time.sleep(1.1)
        to_time = int(time.time())
        time.sleep(1.1)
        subprocess.run(workload + ["--count", "300", "--mix", "insert=40,update=30,replace=10,delete=20",
                                   "--seed", "4", "--id-start", "100000000"], check=True, capture_output=True)
        if in_step:
            in_step = wait_in_step(pods, bed, db, collection, unique)
        extract = [p for p in pods if "extract" in p.argv[1:2]]
        load = [p for p in pods if "load" in p.argv[1:2]]
        active = [p for p in extract if "lease acquired" in p.log_text()]
        standby = [p for p in extract if "standby" in p.log_text()]
        check(len(active) == 1 and len(standby) == len(extract) - 1,
              f"one extractor holds the lease, {len(extract) - 1} stand(s) by",
              f"active {[p.name for p in active]}, standby {[p.name for p in standby]}")
        check(redis_cli(bed["redis_url"], "GET", f"ftsync:{{{unique}}}:lease") != "",
              "the lease key is held")
        consumers = redis_cli(bed["redis_url"], "XINFO", "CONSUMERS", f"ftsync:{{{unique}}}:stream", "loaders")
        for p in load:
            check(p.name in consumers, f"{p.name} is a consumer of the loaders group, named after its pod")
        for p in pods:
            say(f"{p.name}: peak RSS (VmHWM, with children) {p.rss_kib()} KiB")

        if args.check == "probes":
            probe_pods(pods)
            stop(pods, "after the probes")
        elif args.check == "job":
            # The runbook: scale the extractor to 0 first.
            stop(extract, "extractor scaled to 0")
            token_key, snapshot_key = f"ftsync:{{{unique}}}:token", f"ftsync:{{{unique}}}:snapshot"
            check(redis_cli(bed["redis_url"], "EXISTS", f"ftsync:{{{unique}}}:lease") == "0",
                  "the stopped extractors released the lease (reset-token would refuse otherwise)")
            check(redis_cli(bed["redis_url"], "EXISTS", token_key) == "1", "a position is saved before the Job")
            jobs_by_args = {("--clear" in j["spec"]["template"]["spec"]["containers"][0]["args"]): j for j in jobs}
            clear_job, time_job = jobs_by_args.get(True), jobs_by_args.get(False)
            if check(clear_job is not None, "a reset-token --clear Job"):
                _, result = run_job(clear_job, objects, args, bed, overrides, scratch)
                if result.returncode == 0:
                    check(redis_cli(bed["redis_url"], "EXISTS", token_key) == "0"
                          and redis_cli(bed["redis_url"], "EXISTS", snapshot_key) == "0",
                          "the --clear Job removed the saved position (token and snapshot keys)")
            if check(time_job is not None, "a reset-token --to-time Job"):
                rfc3339 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(to_time))

                def at_to_time(argv):
                    i = argv.index("--to-time")
                    return argv[:i + 1] + [rfc3339] + argv[i + 2:]
                job_pod, result = run_job(time_job, objects, args, bed, overrides, scratch, at_to_time)
                if result.returncode == 0:
                    show = subprocess.run([args.ftsync, "reset-token", "--show"], env=job_pod.process_env(),
                                          cwd=job_pod.root + "/tmp", capture_output=True, text=True)
                    sys.stdout.write(show.stdout)
                    check(show.returncode == 0 and (re.search(rf"\b{to_time}\b", show.stdout) or rfc3339 in show.stdout),
                          f"the --to-time Job saved a position at {rfc3339} ({to_time})",
                          f"reset-token --show: {show.stdout.strip()[-400:]} {show.stderr.strip()[-200:]}")
            stop(load, "loaders")
        else:
            stop(pods, "all pods")
    finally:
        for p in started:
            if p.process.poll() is None:
                p.process.kill()
                p.process.wait()
        double.terminate()
        try:
            double.wait(timeout=10)
        except subprocess.TimeoutExpired:
            double.kill()

    if failures:
        print(f"simulate_pods: {len(failures)} check(s) FAILED ({args.kustomization}, {args.check}): "
              + "; ".join(failures[:12]))
        return 1
    print(f"simulate_pods: every check passed ({args.kustomization}, {args.check})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
