//! Gathers the docs to test: the README, and the `//!` lines of each Strata library's lib.rs as markdown.

use std::path::Path;

const CRATES: [&str; 11] =
    ["tensor", "report", "data", "icl", "saliency", "datamodels", "transformer", "train", "growth", "salt", "mwp"];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).to_path_buf();
    let readme = root.join("README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    std::fs::copy(&readme, out.join("README.md")).expect("README.md");
    for name in CRATES {
        let lib = root.join("crates").join(name).join("src/lib.rs");
        println!("cargo:rerun-if-changed={}", lib.display());
        let text = std::fs::read_to_string(&lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
        let docs: String = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("//!"))
            .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
            .collect();
        std::fs::write(out.join(format!("{name}.md")), docs).expect("write docs");
    }
}
