// validate_k8s.mjs - validates Kubernetes objects against the OpenAPI schemas of Kubernetes
// (npm kubernetes-models, generated from Kubernetes' own OpenAPI spec) and, for
// monitoring.coreos.com objects, of the Prometheus Operator (@kubernetes-models/
// prometheus-operator). An object of a kind neither package knows is an error, never a pass.
// usage: node validate_k8s.mjs TOOLS_DIR OBJECTS.json   (a JSON array of objects)
// Prints one line per object; exits 1 when any is invalid.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [toolsDir, objectsPath] = process.argv.slice(2);
if (!toolsDir || !objectsPath) {
  console.error("usage: node validate_k8s.mjs TOOLS_DIR OBJECTS.json");
  process.exit(2);
}
const modules = join(toolsDir, "node_modules");
function modelFile(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return join(modules, "@kubernetes-models", "prometheus-operator", group, version, `${kind}.js`);
  }
  return join(modules, "kubernetes-models", ...(group ? [group] : []), version, `${kind}.js`);
}

let bad = 0;
for (const object of JSON.parse(readFileSync(objectsPath, "utf8"))) {
  const name = `${object.kind}/${object.metadata?.name ?? "?"}`;
  const file = modelFile(object.apiVersion ?? "", object.kind ?? "");
  if (!existsSync(file)) {
    console.log(`FAIL  ${name}: no schema for apiVersion ${object.apiVersion} kind ${object.kind}`);
    bad++;
    continue;
  }
  const module = await import(pathToFileURL(file).href);
  const Model = module[object.kind] ?? module.default;
  try {
    new Model(object).validate();
    console.log(`ok    ${name} (${object.apiVersion}) matches its OpenAPI schema`);
  } catch (e) {
    console.log(`FAIL  ${name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
