// Lists the npm packages an esbuild bundle holds (from its --metafile) with their versions and licences:
// node licences.mjs META.json > LICENSES.txt (run by `make vendor`).
import { readFileSync } from "node:fs";

const meta = JSON.parse(readFileSync(process.argv[2], "utf8"));
const found = new Map();
for (const input of Object.keys(meta.inputs)) {
  if (input.startsWith("(disabled):")) continue; // a module the browser build leaves out
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//g);
  if (!match) continue;
  const root = input.slice(0, input.lastIndexOf(match[match.length - 1]) + match[match.length - 1].length);
  if (found.has(root)) continue;
  const about = JSON.parse(readFileSync(`${root}package.json`, "utf8"));
  found.set(root, `${about.name} ${about.version}: ${about.license || "see the package"}`);
}
console.log("The npm packages bundled into this file, with their licences (the texts are in each package):\n");
console.log([...new Set(found.values())].sort().join("\n"));
