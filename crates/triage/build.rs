//! Embeds every `kb/*.toml` file in the library, so the binary needs no files at run time.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("kb");
    // A directory here makes cargo rerun the script when any file in it is added, removed or changed.
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    // Sorted, so that the merged knowledge base (and so the engine) is the same on every machine.
    files.sort();
    let mut out = String::from("pub(crate) static KB_FILES: &[(&str, &str)] = &[\n");
    for path in &files {
        let name = path.file_name().expect("a file").to_string_lossy().into_owned();
        let full = path.to_str().expect("the path is UTF-8");
        writeln!(out, "    ({name:?}, include_str!({full:?})),").expect("writing to a string");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("kb_files.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}
