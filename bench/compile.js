// Compiles each Wasm module named on the command line, as Envoy's V8 does at start-up:
// bench/compile.py runs this under callgrind with V8's flags set as proxy-wasm sets them.
const fs = require("fs");
for (const path of process.argv.slice(2)) {
  new WebAssembly.Module(fs.readFileSync(path));
}
