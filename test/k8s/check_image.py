#!/usr/bin/python3
"""check_image.py - the container image test (no container engine runs here, so it checks what
can be checked without one, for real):

  lint   deploy/docker/Dockerfile is parsed with dockerfile-ast and linted with dockerfile-utils
         (npm, installed by test/k8s/install-tools.sh); every diagnostic fails. Then the rules the
         image promises: multi-stage, Debian 12 build stage and debian:bookworm-slim runtime,
         USER numeric and not 0, ENTRYPOINT ["ftsync"] in exec form, no secret-looking ENV/ARG,
         OCI labels version and source, ARG VERSION's default equal to CMake's project version,
         the build stage builds ftsync alone without tests or sanitizers, .dockerignore lets in
         exactly what the COPY lines need and keeps .env, .build and .git out.
  build  ftsync is built the way the build stage builds it: the files the build stage COPYs
         (filtered by .dockerignore) are copied into a scratch source tree and the stage's cmake
         RUN line runs there (paths /build and /out moved under the scratch directory).
  libs   `ldd` of that binary, every library mapped to its Debian package with `dpkg -S`; the
         runtime stage's `apt-get install` list must be exactly those packages, less the ones
         the debian:bookworm-slim base already has (test/k8s/bookworm-slim-packages.txt:
         libc6, libgcc-s1, libstdc++6, zlib1g, libgnutls30 and the rest), plus ca-certificates,
         the one package installed for data rather than a library (libcurl verifies https
         servers against its CA bundle). A library missing from the list fails, and so does a
         package nobody loads.

usage: check_image.py SOURCE_DIR SCRATCH_DIR    (FTSYNC_K8S_TOOLS: npm tools, default
       /opt/ftsync-deps/k8s-tools)
Prints one line per check and exits 1 at the end when any failed.
"""
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys

# Installed by the runtime stage without being a library ldd lists; each with its reason.
EXTRA_RUNTIME_PACKAGES = {"ca-certificates": "CA bundle libcurl verifies https servers with"}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIAL|PRIVATE", re.I)

failures = []


def check(ok, what, detail=""):
    print(("ok    " if ok else "FAIL  ") + what + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)
    return ok


def dockerfile_facts(tools, dockerfile):
    if not os.path.isdir(os.path.join(tools, "node_modules", "dockerfile-ast")):
        sys.exit(f"check_image: the npm tools are not installed in {tools}; "
                 "run test/k8s/install-tools.sh (deploy/local/install-deps.sh does)")
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(["node", os.path.join(here, "dockerfile_facts.mjs"), tools, dockerfile],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def instructions(stage, keyword):
    return [i for i in stage["instructions"] if i["keyword"] == keyword]


def dockerignore_rules(path):
    rules = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:] if negate else line
            rules.append((negate, pattern.rstrip("/")))
    return rules


def in_context(rules, relpath):
    """Docker's rule: the last matching pattern decides; a pattern matching a directory covers
    everything under it. Enough of .dockerignore's syntax for plain names and '*'."""
    included = True
    parts = relpath.split("/")
    for negate, pattern in rules:
        for depth in range(1, len(parts) + 1):
            if fnmatch.fnmatchcase("/".join(parts[:depth]), pattern):
                included = negate
                break
    return included


def context_files(source, rules, relpath):
    """Files under relpath (file or directory) that the build context holds."""
    full = os.path.join(source, relpath)
    if os.path.isfile(full):
        return [relpath] if in_context(rules, relpath) else []
    found = []
    for dirpath, dirnames, filenames in os.walk(full):
        dirnames.sort()
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), source)
            if in_context(rules, rel):
                found.append(rel)
    return found


def lint(facts, source):
    stages = facts["stages"]
    for d in facts["diagnostics"]:
        check(False, f"dockerfile-utils: line {d['line']}: {d['severity']} {d['code']}",
              d["message"])
    check(not facts["diagnostics"], "dockerfile-utils reports nothing")
    check(len(stages) >= 2, "multi-stage build", f"{len(stages)} stage(s)")
    build, runtime = stages[0], stages[-1]
    check(build["from"] == "debian" and build["tag"] in ("bookworm", "12"),
          "build stage is Debian 12", f"{build['from']}:{build['tag']}")
    check(runtime["from"] == "debian" and runtime["tag"] == "bookworm-slim",
          "runtime stage is debian:bookworm-slim", f"{runtime['from']}:{runtime['tag']}")
    users = instructions(runtime, "USER")
    user = users[-1]["args"][0] if users else ""
    uid = user.split(":")[0]
    check(uid.isdigit() and int(uid) != 0, "USER is a numeric non-root uid", user or "no USER")
    entry = instructions(runtime, "ENTRYPOINT")
    check(bool(entry) and entry[-1]["json"] == ["ftsync"], 'ENTRYPOINT ["ftsync"] in exec form',
          entry[-1]["args"] if entry else "no ENTRYPOINT")
    for stage in [{"instructions": facts.get("preamble", [])}] + stages:
        for ins in instructions(stage, "ENV") + instructions(stage, "ARG"):
            for name, value in ins.get("properties", []):
                check(not SECRET_NAME.search(name or ""), f"{ins['keyword']} {name} is no secret",
                      f"line {ins['line']}")
    labels = dict(p for ins in instructions(runtime, "LABEL") for p in ins["properties"])
    for key in ("org.opencontainers.image.version", "org.opencontainers.image.source"):
        check(key in labels, f"label {key}")
    args = dict(p for ins in instructions(runtime, "ARG") for p in ins["properties"])
    with open(os.path.join(source, "CMakeLists.txt")) as f:
        project = re.search(r"project\(ftsync VERSION ([0-9.]+)", f.read())
    check(project and args.get("VERSION") == project.group(1),
          "ARG VERSION defaults to CMake's project version",
          f"{args.get('VERSION')} vs {project.group(1) if project else '?'}")
    build_runs = " ".join(i["text"] for i in instructions(build, "RUN"))
    check("-DFTSYNC_BUILD_TESTS=OFF" in build_runs and "--target ftsync" in build_runs,
          "build stage builds ftsync alone, without tests")
    check("FTSYNC_SANITIZE=ON" not in build_runs, "build stage builds without sanitizers")
    volumes = [a for ins in instructions(runtime, "VOLUME") for a in ins["args"]]
    check(all(v == "/tmp" for v in volumes), "no VOLUME but /tmp", volumes)

    ignore = os.path.join(source, ".dockerignore")
    if not check(os.path.isfile(ignore), ".dockerignore at the repository top"):
        return None
    rules = dockerignore_rules(ignore)
    for stage in stages:
        for ins in instructions(stage, "COPY"):
            if ins.get("from"):
                continue
            for src in ins["args"][:-1]:
                if src.startswith("--"):
                    continue
                check(bool(context_files(source, rules, src.rstrip("/"))),
                      f"COPY {src} is in the build context")
    for kept_out in (".env", ".build/dev/cmd/ftsync", ".git", "test/k8s/check_image.py",
                     "deploy/k8s/base/secret.yaml"):
        check(not in_context(rules, kept_out), f".dockerignore keeps {kept_out} out")
    return rules


def build_like_the_image(facts, source, scratch, rules):
    build = facts["stages"][0]
    src = os.path.join(scratch, "src")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    for ins in instructions(build, "COPY"):
        if ins.get("from"):
            continue
        for item in ins["args"][:-1]:
            for rel in context_files(source, rules, item.rstrip("/")):
                os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
                shutil.copy2(os.path.join(source, rel), os.path.join(src, rel))
    cmake_runs = [i["text"] for i in instructions(build, "RUN") if "cmake -S" in i["text"]]
    if not check(len(cmake_runs) == 1, "one cmake RUN line in the build stage"):
        return None
    command = cmake_runs[0].replace("/build", os.path.join(scratch, "build")) \
                           .replace("/out/", os.path.join(scratch, "out") + "/")
    # Two cores are shared by every test: the image's $(nproc) becomes 2 here.
    command = command.replace('"$(nproc)"', "2")
    print(f"build: {command}")
    result = subprocess.run(["bash", "-ec", command], cwd=src, capture_output=True, text=True)
    if not check(result.returncode == 0, "ftsync builds from the build context as the image does",
                 result.stdout[-2000:] + result.stderr[-2000:]):
        return None
    binary = os.path.join(scratch, "out", "usr", "local", "bin", "ftsync")
    check(os.access(binary, os.X_OK), "the build stage's binary exists", binary)
    return binary


def runtime_install_list(runtime):
    packages = []
    for ins in instructions(runtime, "RUN"):
        words = ins["text"].split()
        if "install" not in words:
            continue
        for word in words[words.index("install") + 1:]:
            if word == "&&":
                break
            if not word.startswith("-"):
                packages.append(word)
    return packages


def package_of(path):
    for candidate in (os.path.realpath(path), path):
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":")[0].strip()
    # usrmerge: ldd says /lib/x86_64-linux-gnu, dpkg may know /usr/lib/x86_64-linux-gnu.
    alt = re.sub(r"^/lib", "/usr/lib", os.path.realpath(path))
    result = subprocess.run(["dpkg", "-S", alt], capture_output=True, text=True)
    return result.stdout.split(":")[0].strip() if result.returncode == 0 else None


def check_libraries(facts, binary, source):
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libraries = []
    for line in ldd.splitlines():
        m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libraries.append(m.group(1))
        elif "not found" in line:
            check(False, "ldd resolves every library", line.strip())
    needed = {}
    for lib in libraries:
        package = package_of(lib)
        if check(package is not None, f"dpkg -S knows {lib}"):
            needed.setdefault(package, []).append(os.path.basename(lib))
    with open(os.path.join(source, "test", "k8s", "bookworm-slim-packages.txt")) as f:
        in_base = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    expected = {p for p in needed if p not in in_base} | set(EXTRA_RUNTIME_PACKAGES)
    listed = runtime_install_list(facts["stages"][-1])
    check(len(listed) == len(set(listed)), "no package listed twice")
    missing = sorted(expected - set(listed))
    extra = sorted(set(listed) - expected)
    for p in missing:
        check(False, f"runtime stage installs {p}", f"ftsync loads {', '.join(needed.get(p, []))}")
    for p in extra:
        check(False, f"runtime stage installs only what ftsync loads: {p} is not needed")
    check(not [p for p in listed if p.endswith("-dev")], "no -dev package in the runtime stage")
    print(f"libraries: {len(libraries)} from {len(needed)} packages; "
          f"{len(needed) - len(expected - set(EXTRA_RUNTIME_PACKAGES))} already in bookworm-slim; "
          f"runtime installs {len(listed)}")
    check(not missing and not extra, "runtime apt-get install list == ldd's packages - base + extras")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: check_image.py SOURCE_DIR SCRATCH_DIR")
    source, scratch = (os.path.abspath(a) for a in sys.argv[1:])
    os.makedirs(scratch, exist_ok=True)
    tools = os.environ.get("FTSYNC_K8S_TOOLS") or \
        os.path.join(os.environ.get("FTSYNC_DEPS_DIR") or "/opt/ftsync-deps", "k8s-tools")
    facts = dockerfile_facts(tools, os.path.join(source, "deploy", "docker", "Dockerfile"))
    rules = lint(facts, source)
    if rules is not None:
        binary = build_like_the_image(facts, source, scratch, rules)
        if binary:
            check_libraries(facts, binary, source)
    if failures:
        print(f"check_image: {len(failures)} check(s) failed: " + "; ".join(failures))
        return 1
    print("check_image: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
