//! copy-module: the one program in the fault-injector image (scripts/oci-image.py builds
//! it, statically linked, so the image needs no shell and no libc). On clusters or
//! runtimes without image volumes, an init container of that image runs
//!
//!     /copy-module /plugin.wasm /etc/fault-injector/module/fault_injector.wasm
//!
//! to put the module into an `emptyDir` that Envoy's container mounts
//! (k8s/components/module-from-image/init-container). It refuses a source that is not a
//! Wasm module, so a wrong image fails the pod at this step, with its reason, rather than
//! Envoy's start. It writes a temporary file beside the destination and renames it over,
//! so nothing ever reads half a module, and a rerun (a restarted init container) replaces
//! the file.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

/// The first four bytes of every Wasm module.
const WASM_MAGIC: &[u8] = b"\0asm";

fn copy(source: &Path, destination: &Path) -> Result<usize, String> {
    let module = fs::read(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    if !module.starts_with(WASM_MAGIC) {
        return Err(format!("{} is not a Wasm module (it does not start with \\0asm)", source.display()));
    }
    let partial = destination.with_extension("partial");
    fs::write(&partial, &module).map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    fs::rename(&partial, destination)
        .map_err(|e| format!("cannot rename {} to {}: {e}", partial.display(), destination.display()))?;
    Ok(module.len())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, destination] = args.as_slice() else {
        eprintln!("copy-module: expected SOURCE DESTINATION, such as /plugin.wasm /etc/fault-injector/module/fault_injector.wasm; got {args:?}");
        return ExitCode::from(2);
    };
    match copy(Path::new(source), Path::new(destination)) {
        Ok(size) => {
            println!("copy-module: {source} -> {destination} ({size} bytes)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("copy-module: {e}");
            ExitCode::FAILURE
        }
    }
}
