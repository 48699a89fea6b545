// Runs a wasm32-wasip1 program, such as a test binary `cargo test --target wasm32-wasip1`
// builds, under Node's WASI: test.sh sets it as cargo's runner for that target. The
// proxy-wasm host functions the crate links are stubbed: the tests that run here never
// call them.
//
//   node --experimental-wasi-unstable-preview1 scripts/wasi-run.mjs program.wasm [args...]
//
// (The flag is what Node 18, Debian 12's, needs for WASI; Node 20 takes it and needs none.)
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import process from "node:process";

const [program, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: "preview1", args: [program, ...args], env: process.env, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(program));
// Node 18 has no getImportObject; its WASI imports are wasiImport.
const imports = wasi.getImportObject?.() ?? { wasi_snapshot_preview1: wasi.wasiImport };
for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
    if (kind !== "function" || imports[from]?.[name]) continue;
    imports[from] ??= {};
    imports[from][name] = () => {
        throw new Error(`${from}.${name} called: not available outside Envoy`);
    };
}
const instance = await WebAssembly.instantiate(module, imports);
process.exitCode = wasi.start(instance);
