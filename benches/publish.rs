//! Publishing 200 files of 1 MB and 4 files of 100 MB to the emulator, each tool against a fresh moto server:
//! `runner`'s Publish step, `aws s3 cp --recursive` (then `aws s3 sync` for the nothing-to-do run) and
//! `cdk-assets publish` of the same files as an asset manifest; the first publish and the second, nothing-to-do
//! one. Run: `cargo bench --bench publish` (needs `scripts/moto install`; the aws CLI is used when `aws` is on
//! PATH, cdk-assets when `RUNNER_CDK_ASSETS` names its binary or `~/.cache/runner-bench/node_modules/.bin/cdk-assets`
//! exists: `npm install --prefix ~/.cache/runner-bench cdk-assets`). Figures go to README, not to asserts.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Moto;

const SMALL: usize = 200;
const LARGE: usize = 4;
const MB: usize = 1024 * 1024;

/// What the bench asks of the emulator beyond starting it.
trait BenchBucket {
    fn with_bucket(self) -> Self;
    fn objects(&self) -> usize;
}

impl BenchBucket for Moto {
    fn with_bucket(self) -> Self {
        self.python("boto3.client('s3', **kw).create_bucket(Bucket='bench')");
        self
    }

    fn objects(&self) -> usize {
        self.python(
            "p = boto3.client('s3', **kw).get_paginator('list_objects_v2')\n\
             print(sum(len(page.get('Contents', [])) for page in p.paginate(Bucket='bench')))",
        )
        .parse()
        .unwrap_or(0)
    }
}

/// Distinct pseudo-random bytes per file (so no two objects are alike and nothing compresses).
fn write_data(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    std::fs::create_dir_all(dir.join("data/small")).unwrap();
    std::fs::create_dir_all(dir.join("data/large")).unwrap();
    let mut write = |rel: String, size: usize, seed: u64| {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(&rel)).unwrap());
        let mut buf = vec![0u8; MB];
        for _ in 0..size / MB {
            for chunk in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            f.write_all(&buf).unwrap();
        }
        files.push(rel);
    };
    for i in 0..SMALL {
        write(format!("data/small/{i:03}.bin"), MB, i as u64 + 1);
    }
    for i in 0..LARGE {
        write(format!("data/large/{i}.bin"), 100 * MB, 1000 + i as u64);
    }
    files
}

fn timed(mut command: Command, moto: &Moto) -> Duration {
    let started = Instant::now();
    let out = command
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .expect("run tool");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn runner(dir: &Path, files: &[String]) -> Command {
    let list: String =
        files.iter().enumerate().map(|(i, f)| format!("            (id: \"f{i:03}\", path: \"{f}\"),\n")).collect();
    let pipeline = format!(
        "Pipeline(name: \"bench\", steps: [\n    Step(id: \"publish\", kind: Publish(max_parallel: 16, assets: Files(\n        \
         destination: (account: \"123456789012\", region: \"us-east-1\", bucket: \"bench\", role: Caller),\n        \
         files: [\n{list}        ],\n    ))),\n])\n"
    );
    std::fs::write(dir.join("publish.ron"), pipeline).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
    c.args(["run", "publish.ron", "--output", "json"]).current_dir(dir).env("AWS_MAX_ATTEMPTS", "1");
    c
}

fn cdk_assets_bin() -> Option<PathBuf> {
    let path = std::env::var_os("RUNNER_CDK_ASSETS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/runner-bench/node_modules/.bin/cdk-assets")
    });
    path.exists().then_some(path)
}

fn cdk_assets(dir: &Path, files: &[String], bin: &Path) -> Command {
    let entries: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "\"f{i:03}\": {{\"source\": {{\"path\": \"{f}\", \"packaging\": \"file\"}}, \"destinations\": {{\"d\": \
                 {{\"bucketName\": \"bench\", \"objectKey\": \"cdk/{i:03}.bin\", \"region\": \"us-east-1\"}}}}}}"
            )
        })
        .collect();
    let manifest =
        format!("{{\"version\": \"54.0.0\", \"files\": {{{}}}, \"dockerImages\": {{}}}}", entries.join(", "));
    std::fs::write(dir.join("bench.assets.json"), manifest).unwrap();
    let mut c = Command::new(bin);
    c.args(["publish", "--path", "bench.assets.json"]).current_dir(dir);
    c
}

fn aws_available() -> bool {
    Command::new("aws").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("publish: bench");
        return;
    }
    // Each tool gets a fresh emulator with the bucket; `None` when moto is not installed.
    let fresh = || Moto::start().map(Moto::with_bucket);
    let Some(moto) = fresh() else { return };
    let dir = tempfile::tempdir().unwrap();
    let files = write_data(dir.path());
    println!(
        "{SMALL} files of 1 MB + {LARGE} files of 100 MB ({} MB), each tool against a fresh emulator",
        SMALL + LARGE * 100
    );
    println!("{:<34} {:>14} {:>16} {:>9}", "tool", "first publish", "second publish", "objects");
    let report = |name: &str, first: Duration, second: Duration, objects: usize| {
        let mbps = (SMALL + LARGE * 100) as f64 / first.as_secs_f64();
        println!(
            "{name:<34} {:>9.2} s {:>5.0} MB/s {:>10.0} ms {objects:>9}",
            first.as_secs_f64(),
            mbps,
            second.as_secs_f64() * 1000.0
        );
    };

    let first = timed(runner(dir.path(), &files), &moto);
    let second = timed(runner(dir.path(), &files), &moto);
    report("runner (Publish, max_parallel 16)", first, second, moto.objects());
    drop(moto);

    if aws_available() {
        let moto = fresh().expect("moto");
        let mut cp = Command::new("aws");
        cp.args(["s3", "cp", "--recursive", "--quiet", "data", "s3://bench/aws/"]).current_dir(dir.path());
        let first = timed(cp, &moto);
        let mut sync = Command::new("aws");
        sync.args(["s3", "sync", "--quiet", "data", "s3://bench/aws/"]).current_dir(dir.path());
        let second = timed(sync, &moto);
        report("aws s3 cp --recursive / s3 sync", first, second, moto.objects());
    } else {
        println!("aws s3 cp: skipped (no `aws` on PATH)");
    }

    match cdk_assets_bin() {
        Some(bin) => {
            let moto = fresh().expect("moto");
            let first = timed(cdk_assets(dir.path(), &files, &bin), &moto);
            let second = timed(cdk_assets(dir.path(), &files, &bin), &moto);
            report("cdk-assets publish", first, second, moto.objects());
        }
        None => println!("cdk-assets: skipped (npm install --prefix ~/.cache/runner-bench cdk-assets)"),
    }
}
