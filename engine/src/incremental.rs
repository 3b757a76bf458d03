//! Incremental runs: a node's fingerprint is its step after substitution, the environment it gets (outputs of its
//! needs included), the fingerprints of the nodes it needs (so a new source commit reaches everything downstream)
//! and the content of the input files it declares. A node whose fingerprint matches its last success is
//! `up-to-date`. The last successes live in `<state>/fingerprints/<pipeline>.json`, written atomically.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::write_atomic;
use crate::step::Outputs;

/// The last success of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSuccess {
    pub fingerprint: String,
    pub outputs: Outputs,
    #[serde(default)]
    pub workspace: Option<PathBuf>,
}

/// Last successes of a pipeline's nodes.
#[derive(Debug, Clone, Default)]
pub struct FingerprintStore {
    path: PathBuf,
    pub nodes: BTreeMap<String, LastSuccess>,
    /// Why the store on disk was not used (it was damaged): every node runs as if it never succeeded, and the
    /// next success writes a whole store again.
    pub damaged: Option<String>,
}

impl FingerprintStore {
    /// Load the store of `pipeline`: empty when there is none, and when the file is damaged (so any prefix of it
    /// reads: at worst, incremental steps run again), with [`FingerprintStore::damaged`] saying so. An error only
    /// when the file cannot be read at all.
    pub fn load(state_dir: &Path, pipeline: &str) -> Result<Self, String> {
        let path = state_dir.join("fingerprints").join(format!("{pipeline}.json"));
        let (nodes, damaged) = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(nodes) => (nodes, None),
                Err(e) => {
                    let why = format!("{} is damaged ({e}): incremental steps run again", path.display());
                    (BTreeMap::new(), Some(why))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(FingerprintStore { path, nodes, damaged })
    }

    pub fn record(&mut self, node: &str, success: LastSuccess) -> std::io::Result<()> {
        self.nodes.insert(node.to_string(), success);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_atomic(&self.path, &serde_json::to_vec_pretty(&self.nodes)?)
    }
}

/// A fingerprint under construction.
pub struct Fingerprint(Sha256);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(Sha256::new())
    }
}

impl Fingerprint {
    /// Add a named piece (length-prefixed so pieces cannot run into each other).
    pub fn add(&mut self, name: &str, value: &[u8]) {
        for part in [name.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
    }

    /// Add the content of the inputs (files, directories walked in sorted order, or globs) under `base`.
    pub fn add_inputs(&mut self, base: &Path, inputs: &[String]) -> Result<(), String> {
        for input in inputs {
            let pattern = base.join(input);
            let pattern = pattern.to_string_lossy();
            let mut matched: Vec<PathBuf> = glob::glob(&pattern)
                .map_err(|e| format!("input `{input}` is not a valid glob: {e}"))?
                .filter_map(Result::ok)
                .collect();
            if matched.is_empty() {
                return Err(format!("input `{input}` matches nothing in {}", base.display()));
            }
            matched.sort();
            for path in matched {
                self.add_path(base, &path)?;
            }
        }
        Ok(())
    }

    fn add_path(&mut self, base: &Path, path: &Path) -> Result<(), String> {
        let name = path.strip_prefix(base).unwrap_or(path).to_string_lossy().into_owned();
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("cannot read input {}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n != ".git"))
                .collect();
            entries.sort();
            self.add("dir", name.as_bytes());
            for entry in entries {
                self.add_path(base, &entry)?;
            }
            return Ok(());
        }
        let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read input {}: {e}", path.display()))?;
        let mut content = Sha256::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(|e| format!("cannot read input {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            content.update(&buf[..n]);
        }
        self.add(&name, &content.finalize());
        Ok(())
    }

    pub fn finish(self) -> String {
        format!("{:x}", self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_change_with_input_content_and_not_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.txt"), "one").unwrap();
        let fp = || {
            let mut f = Fingerprint::default();
            f.add("step", b"x");
            f.add_inputs(dir.path(), &["src".to_string()]).unwrap();
            f.finish()
        };
        let first = fp();
        assert_eq!(first, fp());
        std::fs::write(dir.path().join("src/a.txt"), "two").unwrap();
        assert_ne!(first, fp());
    }

    #[test]
    fn an_input_that_matches_nothing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fingerprint::default();
        assert!(f.add_inputs(dir.path(), &["missing/*.txt".to_string()]).unwrap_err().contains("matches nothing"));
    }
}
