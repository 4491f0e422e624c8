// dockerfile_facts.mjs - parses a Dockerfile with dockerfile-ast and lints it with
// dockerfile-utils (the parser and validator behind the Docker language server), and prints
// what test/k8s/check_image.py needs as one JSON object on stdout:
//   { preamble: [ARG instructions before the first FROM],
//     stages: [{ from, tag, name, instructions: [{ keyword, args: [..], json: [..] | null }] }],
//     diagnostics: [{ line, severity, code, message }] }
// usage: node dockerfile_facts.mjs TOOLS_DIR DOCKERFILE
// TOOLS_DIR is where test/k8s/install-tools.sh ran `npm ci` (it has node_modules/).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const [toolsDir, dockerfilePath] = process.argv.slice(2);
if (!toolsDir || !dockerfilePath) {
  console.error("usage: node dockerfile_facts.mjs TOOLS_DIR DOCKERFILE");
  process.exit(2);
}
const require = createRequire(join(toolsDir, "package.json"));
const { DockerfileParser } = require("dockerfile-ast");
const { validate } = require("dockerfile-utils");

const text = readFileSync(dockerfilePath, "utf8");
const dockerfile = DockerfileParser.parse(text);
const stages = [];
const preamble = []; // ARGs before the first FROM
let current = null;
for (const instruction of dockerfile.getInstructions()) {
  const keyword = instruction.getKeyword();
  const args = instruction.getArguments().map((a) => a.getValue());
  if (keyword === "FROM") {
    current = { from: instruction.getImageName(), tag: instruction.getImageTag(),
                name: instruction.getBuildStage(), instructions: [] };
    stages.push(current);
  }
  let json = null;
  if (typeof instruction.getJSONStrings === "function") {
    const strings = instruction.getJSONStrings();
    if (strings.length > 0) json = strings.map((s) => s.getJSONValue());
  }
  const entry = { keyword, args, json, line: instruction.getRange().start.line + 1 };
  if (keyword === "RUN") entry.text = instruction.getExpandedArguments().map((a) => a.getValue()).join(" ");
  if (keyword === "LABEL" || keyword === "ENV") {
    entry.properties = instruction.getProperties().map((p) => [p.getName(), p.getValue()]);
  }
  if (keyword === "ARG") {
    const p = instruction.getProperty();
    entry.properties = p ? [[p.getName(), p.getValue()]] : [];
  }
  if (keyword === "COPY") {
    entry.from = instruction.getFromFlag() ? instruction.getFromFlag().getValue() : null;
  }
  (current ? current.instructions : preamble).push(entry);
}
const severity = { 1: "error", 2: "warning", 3: "information", 4: "hint" };
const diagnostics = validate(text).map((d) => ({
  line: d.range.start.line + 1, severity: severity[d.severity] || String(d.severity),
  code: d.code, message: d.message }));
process.stdout.write(JSON.stringify({ preamble, stages, diagnostics }, null, 1) + "\n");
