//! The fuzz target of issue 12: mutated pipeline files through everything that reads one before a run: load
//! (RON, UTF-8), validate (with the real step catalog's kind checks), plan, `plan`'s waves, the graph as text,
//! DOT and Mermaid, and the diagnostics renderer. Nothing may panic, and what a diagnostic prints is bounded.
//!
//! Seeds: `pipelines/*.ron`, every `ron` snippet of README.md, and `tests/fuzz/corpus/` (the cases issues found;
//! a finding is written there, so it stays a seed). Each case is a seed with one to eight random mutations: cut,
//! delete, insert a RON token or odd bytes (CR, tabs, multi-byte characters, invalid UTF-8), repeat a range (long
//! names, long lines), splice another seed in, change every line end to CRLF or CR.
//!
//! Runs for `RUNNER_FUZZ_SECONDS` (default 20; `scripts/test` sets it) from a random seed, or from
//! `RUNNER_FUZZ_SEED` to replay one, and says how many cases it ran: `cargo test --test fuzz -- --nocapture`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::diagnostic::{LINE_WINDOW, MAX_MESSAGE};
use engine::plan::Plan;
use engine::step::PlanContext;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_dir() -> PathBuf {
    repo_root().join("tests/fuzz/corpus")
}

/// Every seed: the shipped pipelines, README's RON snippets, the corpus.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("pipelines"))
        .unwrap()
        .chain(std::fs::read_dir(corpus_dir()).unwrap())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    seeds.extend(files.iter().map(|f| std::fs::read(f).unwrap()));
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```ron\n") {
        let body = &rest[start + 7..];
        let end = body.find("```").unwrap_or(body.len());
        seeds.push(body.as_bytes()[..end].to_vec());
        rest = &body[end..];
    }
    assert!(seeds.len() >= 15, "{} seeds", seeds.len());
    seeds
}

/// Tokens worth inserting: RON punctuation and words of the model, references, odd characters.
const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    "\"",
    "'",
    "//",
    "/*",
    "*/",
    "\r\n",
    "\r",
    "\n",
    "\t",
    "é",
    "世界",
    "𝄞",
    "r#\"",
    "\"#",
    "\\",
    "\\u{1F600}",
    "${",
    "}",
    "${env:",
    "${steps.",
    ".outputs.",
    "$${",
    "Pipeline(",
    "Step(",
    "id: ",
    "needs: [",
    "kind: ",
    "Shell(commands: [",
    "Deploy(",
    "Listed([",
    "Assembly(dir: \"cdk.out\", stage: ",
    "depends_on: [",
    "name: ",
    "Some(",
    "None",
    "true",
    "-1",
    "1e999",
    "0x",
    "#![enable(implicit_some)]",
    "\u{1b}[2J",
    "\u{0}",
    "\u{feff}",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Keep the first `at` (a fraction of the length, in 1/65536).
    Cut(u16),
    Delete(u16, u16),
    Insert(u16, usize),
    Bytes(u16, Vec<u8>),
    /// Repeat `len` bytes at `at` this many times (long names, long lines).
    Repeat(u16, u8, u16),
    /// Put a range of another seed at `at`.
    Splice(u16, usize, u16, u16),
    Crlf,
    Cr,
}

fn mutation(rng: &mut fastrand::Rng, seeds: usize) -> Mutation {
    let at = rng.u16(..);
    match rng.u8(..8) {
        0 => Mutation::Cut(at),
        1 => Mutation::Delete(at, rng.u16(1..64)),
        2 => Mutation::Insert(at, rng.usize(..TOKENS.len())),
        3 => {
            let bytes = (0..rng.usize(1..4)).map(|_| rng.u8(..)).collect();
            Mutation::Bytes(at, bytes)
        }
        4 => Mutation::Repeat(at, rng.u8(1..16), rng.u16(1..4000)),
        5 => Mutation::Splice(at, rng.usize(..seeds), rng.u16(..), rng.u16(1..400)),
        6 => Mutation::Crlf,
        _ => Mutation::Cr,
    }
}

fn at(fraction: u16, len: usize) -> usize {
    (len * fraction as usize) >> 16
}

fn apply(seeds: &[Vec<u8>], seed: usize, mutations: &[Mutation]) -> Vec<u8> {
    let mut text = seeds[seed].clone();
    for m in mutations {
        match m {
            Mutation::Cut(a) => text.truncate(at(*a, text.len() + 1)),
            Mutation::Delete(a, l) => {
                let start = at(*a, text.len());
                let end = (start + *l as usize).min(text.len());
                text.drain(start..end);
            }
            Mutation::Insert(a, t) => {
                let i = at(*a, text.len() + 1);
                text.splice(i..i, TOKENS[*t].bytes());
            }
            Mutation::Bytes(a, b) => {
                let i = at(*a, text.len() + 1);
                text.splice(i..i, b.iter().copied());
            }
            Mutation::Repeat(a, l, n) => {
                let start = at(*a, text.len());
                let end = (start + *l as usize).min(text.len());
                let piece = text[start..end].to_vec();
                let repeated: Vec<u8> = piece.iter().copied().cycle().take(piece.len() * *n as usize).collect();
                text.splice(end..end, repeated);
            }
            Mutation::Splice(a, s, f, l) => {
                let other = &seeds[*s];
                let from = at(*f, other.len());
                let piece = other[from..(from + *l as usize).min(other.len())].to_vec();
                let i = at(*a, text.len() + 1);
                text.splice(i..i, piece);
            }
            Mutation::Crlf => text = String::from_utf8_lossy(&text).replace('\n', "\r\n").into_bytes(),
            Mutation::Cr => text = String::from_utf8_lossy(&text).replace('\n', "\r").into_bytes(),
        }
    }
    text
}

/// The most a diagnostic's line may hold: a bounded message or a windowed source line (4 bytes a character).
const MAX_LINE: usize = 4 * (MAX_MESSAGE + LINE_WINDOW + 64);

fn assert_bounded(rendered: &str) {
    for line in rendered.lines() {
        assert!(line.len() <= MAX_LINE, "a diagnostic line of {} bytes: {}…", line.len(), &line[..200]);
        assert!(!line.contains('\r') && !line.contains('\u{1b}'), "a control character reached the output: {line:?}");
    }
}

/// Everything that reads a pipeline before a run, on `bytes`.
fn check(bytes: &[u8], base_dir: &Path) {
    let path = Path::new("fuzz.ron");
    let loaded = match engine::load::parse_bytes(path, bytes.to_vec()) {
        Ok(loaded) => loaded,
        Err(e) => return assert_bounded(&e.render()),
    };
    let catalog = steps::StepCatalog::default();
    let valid = match engine::validate::validate(loaded, &catalog, &|_| None) {
        Ok(valid) => valid,
        Err(invalid) => return assert_bounded(&invalid.render()),
    };
    let mut warnings = valid.warnings.clone();
    warnings.extend(valid.unset_env.iter().cloned());
    assert_bounded(&engine::validate::render_all(&valid.loaded, &warnings));
    let plan = match Plan::build(valid, &catalog, &PlanContext { base_dir: base_dir.to_path_buf() }) {
        Ok(plan) => plan,
        Err(invalid) => return assert_bounded(&invalid.render()),
    };
    for nodes in [0, 4] {
        engine::graph::waves(&plan, engine::graph::JobsLimit { nodes, set_by: "--jobs" });
    }
    engine::graph::text(&plan);
    engine::graph::dot(&plan);
    engine::graph::mermaid(&plan);
}

#[test]
fn mutated_pipelines_never_panic_and_their_diagnostics_stay_bounded() {
    let seconds: u64 = std::env::var("RUNNER_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("RUNNER_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let base = tempfile::tempdir().unwrap();
    let seeds = seeds();
    for input in &seeds {
        check(input, base.path());
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let (started, mut cases) = (Instant::now(), seeds.len());
    while started.elapsed() < Duration::from_secs(seconds) {
        let from = rng.usize(..seeds.len());
        let mutations: Vec<Mutation> = (0..rng.usize(1..9)).map(|_| mutation(&mut rng, seeds.len())).collect();
        let input = apply(&seeds, from, &mutations);
        let outcome = std::panic::catch_unwind(|| check(&input, base.path()));
        if let Err(panic) = outcome {
            let name = format!("found-{:016x}.ron", fxhash(&input));
            std::fs::write(corpus_dir().join(&name), &input).unwrap();
            let what = panic.downcast_ref::<String>().cloned().or(panic.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!(
                "case {cases} (RUNNER_FUZZ_SEED={seed}, seed {from}, {mutations:?}) failed: {}\nthe input is kept as \
                 tests/fuzz/corpus/{name}",
                what.unwrap_or_default()
            );
        }
        cases += 1;
    }
    eprintln!("fuzz: {cases} cases in {:.0?} (RUNNER_FUZZ_SEED={seed}), no finding", started.elapsed());
}

fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}
