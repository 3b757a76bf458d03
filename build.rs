//! Empty on purpose: cargo reads `[build-dependencies]` only for a package with a build script, and Cargo.toml
//! names there the features of `syn` that the tests' dependencies turn on, so that `cargo build` and `cargo test`
//! compile `syn`, and every procedural macro above it, once.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
