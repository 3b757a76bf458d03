//! The Publish step against a real AWS emulator (moto): file assets declared in a pipeline, uploaded into the
//! target account through the CDK file-publishing role.

mod common;
mod emulator;

use common::Test;
use emulator::Moto;

const DEV: &str = "111111111111";
const BUCKET: &str = "cdk-hnb659fds-assets-111111111111-us-east-1";

/// The assets bucket of the Dev account, encrypted with a KMS key by default (like CDK's bootstrap bucket).
fn kms_bucket(moto: &Moto) -> String {
    let made = moto.boto(
        Some(DEV),
        &format!(
            r#"
key = client("kms").create_key()["KeyMetadata"]["Arn"]
s3 = client("s3")
s3.create_bucket(Bucket="{BUCKET}")
s3.put_bucket_encryption(Bucket="{BUCKET}", ServerSideEncryptionConfiguration={{"Rules": [
    {{"ApplyServerSideEncryptionByDefault": {{"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}}}]}})
result["key"] = key
"#
        ),
    );
    made["key"].as_str().unwrap().to_string()
}

const PIPELINE: &str = r#"Pipeline(name: "assets", steps: [
    Step(id: "publish", kind: Publish(assets: Files(
        destination: (account: "111111111111", region: "us-east-1"),
        files: [
            (id: "site", path: "site"),
            (id: "big", path: "big.bin"),
            (id: "notes", path: "notes.txt"),
        ],
    ))),
])"#;

fn big_file(test: &Test, mb: usize) {
    let bytes: Vec<u8> = (0..mb * 1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(test.path().join("big.bin"), bytes).unwrap();
}

#[test]
fn publish_uploads_files_and_zipped_directories_under_the_sha256_of_their_bytes() {
    let moto = Moto::start();
    let kms_key = kms_bucket(&moto);
    let test = moto
        .env(Test::new())
        .write("site/index.html", "<h1>hello</h1>\n")
        .write("site/js/app.js", "console.log(1)\n")
        .write("notes.txt", "some notes\n")
        .pipeline(PIPELINE)
        .args(&["run", "pipeline.ron", "--output", "json"]);
    big_file(&test, 20);
    let out = test.run();
    out.assert_code(0);
    assert_eq!(out.statuses()["publish"], "succeeded", "{}", out.dump());
    let outputs = out.finished("publish")["outputs"].clone();
    let site_key = outputs["SITE_KEY"].as_str().unwrap().to_string();
    assert!(site_key.ends_with(".zip"), "{outputs}");
    assert_eq!(outputs["BIG_URL"], format!("s3://{BUCKET}/{}", outputs["BIG_KEY"].as_str().unwrap()));
    assert!(outputs["NOTES_KEY"].as_str().unwrap().ends_with(".txt"));

    let state = moto.boto(
        Some(DEV),
        &format!(
            r#"
import hashlib, io, zipfile
s3 = client("s3")
objs = s3.list_objects_v2(Bucket="{BUCKET}").get("Contents", [])
result["objects"] = {{}}
for o in objs:
    got = s3.get_object(Bucket="{BUCKET}", Key=o["Key"])
    body = got["Body"].read()
    result["objects"][o["Key"]] = {{"sha256": hashlib.sha256(body).hexdigest(), "size": len(body),
        "sse": got.get("ServerSideEncryption"), "kms": got.get("SSEKMSKeyId"), "etag": got["ETag"]}}
    if o["Key"].endswith(".zip"):
        z = zipfile.ZipFile(io.BytesIO(body))
        result["zip"] = [(i.filename, list(i.date_time), (i.external_attr >> 16) & 0o777) for i in z.infolist()]
result["uploads"] = len(s3.list_multipart_uploads(Bucket="{BUCKET}").get("Uploads", []))
"#
        ),
    );
    let objects = state["objects"].as_object().unwrap();
    assert_eq!(objects.len(), 3, "{state}");
    for (key, o) in objects {
        let stem = key.split('.').next().unwrap();
        assert_eq!(o["sha256"], stem, "the key of {key} is the sha256 of its bytes");
        assert_eq!(o["sse"], "aws:kms", "{key} is encrypted with the bucket's KMS key");
    }
    let big = &objects[outputs["BIG_KEY"].as_str().unwrap()];
    assert_eq!(big["size"], 20 * 1024 * 1024);
    assert!(big["etag"].as_str().unwrap().ends_with("-3\""), "uploaded in three parts: {big}");
    assert!(big["kms"].as_str().unwrap_or_default().contains(kms_key.rsplit('/').next().unwrap()), "{big}");
    assert_eq!(state["uploads"], 0, "no multipart upload left open");
    assert_eq!(
        state["zip"],
        serde_json::json!([["index.html", [1980, 1, 1, 0, 0, 0], 0o644], ["js/app.js", [1980, 1, 1, 0, 0, 0], 0o644]])
    );
    // Progress in bytes, ending with every byte and every asset done.
    let last = out.json_lines().into_iter().rfind(|e| e["event"] == "progress" && e["unit"] == "bytes").unwrap();
    assert_eq!(last["done"], last["total"]);
    assert_eq!(last["message"], "3/3 assets");
}

#[test]
fn a_second_publish_uploads_nothing_and_reports_unchanged() {
    let moto = Moto::start();
    kms_bucket(&moto);
    let test = moto
        .env(Test::new())
        .write("site/index.html", "<h1>hello</h1>\n")
        .write("notes.txt", "some notes\n")
        .pipeline(PIPELINE)
        .args(&["run", "pipeline.ron", "--output", "json"]);
    big_file(&test, 10);
    let first = test.run();
    first.assert_code(0);
    let listing = r#"
s3 = client("s3")
result["objects"] = sorted((o["Key"], str(o["LastModified"]), o["ETag"]) for o in s3.list_objects_v2(Bucket="BUCKET").get("Contents", []))
"#
    .replace("BUCKET", BUCKET);
    let before = moto.boto(Some(DEV), &listing);
    // The site is zipped again from files written anew: same bytes, same key.
    std::fs::write(test.path().join("site/index.html"), "<h1>hello</h1>\n").unwrap();
    let second = test.run();
    second.assert_code(0);
    assert_eq!(second.statuses()["publish"], "unchanged", "{}", second.dump());
    assert_eq!(first.finished("publish")["outputs"], second.finished("publish")["outputs"]);
    let already = second.combined().matches("is already published at s3://").count();
    assert_eq!(already, 3, "{}", second.dump());
    assert_eq!(before, moto.boto(Some(DEV), &listing), "nothing was written again");
}

#[test]
fn a_missing_source_path_fails_naming_the_asset_and_uploads_nothing() {
    let moto = Moto::start();
    kms_bucket(&moto);
    let out = moto
        .env(Test::new())
        .write("site/index.html", "x")
        .write("notes.txt", "x")
        .pipeline(PIPELINE)
        .args(&["run", "pipeline.ron", "--output", "json"])
        .run();
    out.assert_code(1);
    let error = out.finished("publish")["error"].as_str().unwrap().to_string();
    assert!(error.contains("cannot publish asset `big`") && error.contains("big.bin"), "{error}");
    let state = moto.boto(
        Some(DEV),
        &format!(r#"result["n"] = len(client("s3").list_objects_v2(Bucket="{BUCKET}").get("Contents", []))"#),
    );
    assert_eq!(state["n"], 0);
}

#[test]
fn a_bucket_that_does_not_exist_is_named_with_the_asset_and_account() {
    let moto = Moto::start();
    let out = moto
        .env(Test::new())
        .write("notes.txt", "x")
        .pipeline(
            r#"Pipeline(name: "assets", steps: [
    Step(id: "publish", kind: Publish(assets: Files(
        destination: (account: "111111111111", region: "us-east-1", bucket: "no-such-bucket"),
        files: [(id: "notes", path: "notes.txt")],
    ))),
])"#,
        )
        .args(&["run", "pipeline.ron", "--output", "json"])
        .run();
    out.assert_code(1);
    let error = out.finished("publish")["error"].as_str().unwrap().to_string();
    assert!(error.contains("asset `notes` to s3://no-such-bucket/"), "{error}");
    assert!(error.contains("account 111111111111 as arn:aws:iam::111111111111:role/cdk-hnb659fds-file-publishing-role-111111111111-us-east-1"), "{error}");
    assert!(error.contains("NoSuchBucket"), "AWS's reason is quoted: {error}");
}

#[test]
fn publish_fields_are_validated_before_anything_runs() {
    let out = Test::new()
        .pipeline(
            r#"Pipeline(name: "assets", steps: [
    Step(id: "publish", kind: Publish(assets: Files(
        destination: (account: "1234", region: "us-east-1"),
        files: [(id: "a b", path: "x"), (id: "c", path: "")],
    ))),
])"#,
        )
        .args(&["validate", "pipeline.ron"])
        .run();
    out.assert_code(2);
    out.assert_stderr_contains("account `1234` is not a 12-digit AWS account id");
    out.assert_stderr_contains("asset id `a b` must be non-empty");
    out.assert_stderr_contains("empty `path`");
}

/// A one-stage assembly whose stack has a docker image asset.
fn assembly_with_an_image(test: Test) -> Test {
    test.write(
        "cdk.out/manifest.json",
        r#"{"version": "55.0.0", "artifacts": {"assembly-Dev": {"type": "cdk:cloud-assembly",
            "properties": {"directoryName": "assembly-Dev", "displayName": "Dev"}}}}"#,
    )
    .write(
        "cdk.out/assembly-Dev/manifest.json",
        r#"{"version": "55.0.0", "artifacts": {
            "DevApi.assets": {"type": "cdk:asset-manifest", "properties": {"file": "DevApi.assets.json"}},
            "DevApi": {"type": "aws:cloudformation:stack", "environment": "aws://111111111111/us-east-1",
                "properties": {"templateFile": "DevApi.template.json", "stackName": "Dev-Api"},
                "dependencies": ["DevApi.assets"]}}}"#,
    )
    .write(
        "cdk.out/assembly-Dev/DevApi.assets.json",
        r#"{"version": "55.0.0", "files": {}, "dockerImages": {"f00d": {"displayName": "Api/Image",
            "source": {"directory": "../asset.f00d"},
            "destinations": {"d": {"repositoryName": "cdk-hnb659fds-container-assets-111111111111-us-east-1",
                "imageTag": "f00d", "region": "us-east-1",
                "assumeRoleArn": "arn:${AWS::Partition}:iam::111111111111:role/cdk-hnb659fds-image-publishing-role-111111111111-us-east-1"}}}}}"#,
    )
    .write("cdk.out/assembly-Dev/DevApi.template.json", r#"{"Resources": {}}"#)
    .write("cdk.out/asset.f00d/Dockerfile", "FROM scratch\n")
}

const IMAGES: &str = r#"Pipeline(name: "images", steps: [
    Step(id: "publish", kind: Publish(assets: Assembly(dir: "cdk.out", stage: "Dev"))),
])"#;

const REPOSITORY: &str = "cdk-hnb659fds-container-assets-111111111111-us-east-1";

/// ECR repositories in the Dev account with immutable tags, as `runner bootstrap` makes them.
fn repositories(moto: &Moto, names: &[&str]) {
    moto.boto(
        Some(DEV),
        &format!(
            r#"
for name in {names:?}:
    client("ecr").create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")
"#
        ),
    );
}

/// The tags in each repository of the Dev account.
fn image_tags(moto: &Moto) -> serde_json::Value {
    moto.boto(
        Some(DEV),
        r#"
ecr = client("ecr")
result["tags"] = {r["repositoryName"]: sorted(t for i in ecr.describe_images(repositoryName=r["repositoryName"])["imageDetails"] for t in i.get("imageTags", []))
    for r in ecr.describe_repositories()["repositories"]}
"#,
    )
}

/// A stand-in `docker` on PATH: records every call in `docker.log` (a login's password, read on stdin, as
/// `password=...`), and `push REGISTRY/REPO:TAG` puts an image into the emulator's ECR of the registry's account,
/// failing like docker when an immutable tag is already there.
struct StandInDocker {
    dir: tempfile::TempDir,
}

impl StandInDocker {
    fn new(moto: &Moto) -> StandInDocker {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("docker.log");
        let python = std::env::var("RUNNER_MOTO_PYTHON")
            .unwrap_or_else(|_| format!("{}/.cache/runner-venv/bin/python", std::env::var("HOME").unwrap()));
        let push = format!(
            r#"
import boto3, json, sys
ref = sys.argv[1]
host, rest = ref.split("/", 1)
repo, tag = rest.rsplit(":", 1)
account, region = host.split(".")[0], host.split(".")[3]
base = dict(region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing")
sts = boto3.session.Session(**base).client("sts", endpoint_url="{endpoint}")
c = sts.assume_role(RoleArn=f"arn:aws:iam::{{account}}:role/docker", RoleSessionName="docker")["Credentials"]
ecr = boto3.session.Session(region_name=region, aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
    aws_session_token=c["SessionToken"]).client("ecr", endpoint_url="{endpoint}")
manifest = json.dumps({{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {{"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": "sha256:" + "a" * 64}}, "layers": []}})
try:
    ecr.put_image(repositoryName=repo, imageManifest=manifest, imageTag=tag)
except Exception as e:
    print(f"tag invalid: {{e}}", file=sys.stderr)
    sys.exit(1)
"#,
            endpoint = moto.endpoint()
        );
        std::fs::write(dir.path().join("push.py"), push).unwrap();
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> '{log}'\ncase \"$1\" in\n  login) read -r pw; echo \"password=$pw\" >> '{log}' ;;\n  push) exec '{python}' '{push}' \"$2\" ;;\nesac\nexit 0\n",
            log = log.display(),
            push = dir.path().join("push.py").display(),
        );
        let docker = dir.path().join("docker");
        std::fs::write(&docker, script).unwrap();
        std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        StandInDocker { dir }
    }

    fn path(&self) -> String {
        format!("{}:/usr/bin:/bin", self.dir.path().display())
    }

    /// The calls so far (without `--version`), and forget them.
    fn calls(&self) -> Vec<String> {
        let log = self.dir.path().join("docker.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        text.lines().filter(|l| *l != "--version").map(str::to_string).collect()
    }
}

#[test]
fn a_docker_image_asset_without_docker_fails_naming_the_asset() {
    let moto = Moto::start();
    repositories(&moto, &[REPOSITORY]);
    let empty = tempfile::tempdir().unwrap();
    let test = assembly_with_an_image(moto.env(Test::new()))
        .pipeline(IMAGES)
        .env("PATH", empty.path().to_str().unwrap())
        .args(&["run", "pipeline.ron", "--output", "json"]);
    let plan = assembly_with_an_image(Test::new().args(&["plan", "pipeline.ron"])).pipeline(IMAGES);
    plan.run().assert_code(0).assert_stdout_contains("publish/Api-Image");
    let out = test.run();
    out.assert_code(1);
    let error = out.finished("publish/Api-Image")["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("cannot publish docker image asset `Api/Image`")
            && error.contains("docker CLI is not installed"),
        "{error}"
    );
}

#[test]
fn a_docker_image_asset_is_built_then_pushed_after_an_ecr_login_through_its_destination() {
    let moto = Moto::start();
    repositories(&moto, &[REPOSITORY]);
    let docker = StandInDocker::new(&moto);
    let test = assembly_with_an_image(moto.env(Test::new())).pipeline(IMAGES).env("PATH", &docker.path()).args(&[
        "run",
        "pipeline.ron",
        "--output",
        "json",
    ]);
    let out = test.run();
    out.assert_code(0);
    let lines = docker.calls();
    let registry = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
    let image = format!("{registry}/{REPOSITORY}:f00d");
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines[0].starts_with("build --tag runner-asset:f00d ") && lines[0].ends_with("asset.f00d"), "{lines:?}");
    assert_eq!(lines[1], format!("login --username AWS --password-stdin {registry}"));
    assert!(lines[2].len() > "password=".len(), "the ECR password came on stdin: {lines:?}");
    assert_eq!(lines[3], format!("tag runner-asset:f00d {image}"));
    assert_eq!(lines[4], format!("push {image}"));
    assert!(!out.combined().contains(&lines[2]["password=".len()..]), "the password is never logged");
    assert_eq!(image_tags(&moto)["tags"][REPOSITORY], serde_json::json!(["f00d"]));
}

/// Two stacks of the stage with the same image (one hash) and each its own repository, as two asset manifests
/// name it.
fn assembly_with_one_image_for_two_stacks(test: Test) -> Test {
    let stack = |name: &str, repository: &str| {
        format!(
            r#"{{"version": "55.0.0", "files": {{}}, "dockerImages": {{"f00d": {{"displayName": "Api/Image",
            "source": {{"directory": "../asset.f00d"}},
            "destinations": {{"d": {{"repositoryName": "{repository}", "imageTag": "f00d", "region": "us-east-1",
                "assumeRoleArn": "arn:${{AWS::Partition}}:iam::111111111111:role/cdk-hnb659fds-image-publishing-role-111111111111-us-east-1"}}}}}}}}}}"#
        )
        .replace("NAME", name)
    };
    test.write(
        "cdk.out/manifest.json",
        r#"{"version": "55.0.0", "artifacts": {"assembly-Dev": {"type": "cdk:cloud-assembly",
            "properties": {"directoryName": "assembly-Dev", "displayName": "Dev"}}}}"#,
    )
    .write(
        "cdk.out/assembly-Dev/manifest.json",
        r#"{"version": "55.0.0", "artifacts": {
            "DevApi.assets": {"type": "cdk:asset-manifest", "properties": {"file": "DevApi.assets.json"}},
            "DevApi": {"type": "aws:cloudformation:stack", "environment": "aws://111111111111/us-east-1",
                "properties": {"templateFile": "DevApi.template.json", "stackName": "Dev-Api"},
                "dependencies": ["DevApi.assets"]},
            "DevWorker.assets": {"type": "cdk:asset-manifest", "properties": {"file": "DevWorker.assets.json"}},
            "DevWorker": {"type": "aws:cloudformation:stack", "environment": "aws://111111111111/us-east-1",
                "properties": {"templateFile": "DevWorker.template.json", "stackName": "Dev-Worker"},
                "dependencies": ["DevWorker.assets"]}}}"#,
    )
    .write("cdk.out/assembly-Dev/DevApi.assets.json", &stack("Api", "api-images"))
    .write("cdk.out/assembly-Dev/DevWorker.assets.json", &stack("Worker", "worker-images"))
    .write("cdk.out/assembly-Dev/DevApi.template.json", r#"{"Resources": {}}"#)
    .write("cdk.out/assembly-Dev/DevWorker.template.json", r#"{"Resources": {}}"#)
    .write("cdk.out/asset.f00d/Dockerfile", "FROM scratch\n")
}

#[test]
fn one_image_for_two_repositories_is_built_once_pushed_to_each_and_only_where_it_is_missing() {
    let moto = Moto::start();
    repositories(&moto, &["api-images", "worker-images"]);
    let docker = StandInDocker::new(&moto);
    let test = assembly_with_one_image_for_two_stacks(moto.env(Test::new()))
        .pipeline(IMAGES)
        .env("PATH", &docker.path())
        .args(&["run", "pipeline.ron", "--output", "json"]);
    let out = test.run();
    out.assert_code(0);
    let calls = docker.calls();
    assert_eq!(calls.iter().filter(|c| c.starts_with("build ")).count(), 1, "{calls:?}");
    let pushes: Vec<&String> = calls.iter().filter(|c| c.starts_with("push ")).collect();
    assert_eq!(pushes.len(), 2, "{calls:?}");
    assert!(
        pushes.iter().any(|p| p.contains("/api-images:f00d"))
            && pushes.iter().any(|p| p.contains("/worker-images:f00d"))
    );
    let both = serde_json::json!({"api-images": ["f00d"], "worker-images": ["f00d"]});
    assert_eq!(image_tags(&moto)["tags"], both);

    // Again: every repository has the tag (immutable: a push would fail), so nothing is built or pushed.
    let again = test.run();
    again.assert_code(0);
    assert_eq!(again.statuses()["publish/Api-Image"], "unchanged", "{}", again.dump());
    assert_eq!(docker.calls(), Vec::<String>::new());

    // One repository loses the image: it alone gets it again.
    moto.boto(
        Some(DEV),
        r#"client("ecr").batch_delete_image(repositoryName="worker-images", imageIds=[{"imageTag": "f00d"}])"#,
    );
    let third = test.run();
    third.assert_code(0);
    assert_eq!(third.statuses()["publish/Api-Image"], "succeeded", "{}", third.dump());
    let calls = docker.calls();
    let pushes: Vec<&String> = calls.iter().filter(|c| c.starts_with("push ")).collect();
    assert_eq!(pushes.len(), 1, "{calls:?}");
    assert!(pushes[0].contains("/worker-images:f00d"), "{calls:?}");
    assert_eq!(image_tags(&moto)["tags"], both);
}

#[test]
fn many_assets_to_one_bucket_are_checked_with_a_listing_and_a_second_publish_uploads_nothing() {
    let moto = Moto::start();
    kms_bucket(&moto);
    let mut test = moto.env(Test::new());
    let mut files = String::new();
    for i in 0..20 {
        test = test.write(&format!("many/{i:02}.txt"), &format!("file {i}\n"));
        files.push_str(&format!("(id: \"f{i:02}\", path: \"many/{i:02}.txt\"), "));
    }
    let test = test
        .pipeline(&format!(
            r#"Pipeline(name: "many", steps: [
    Step(id: "publish", kind: Publish(assets: Files(
        destination: (account: "111111111111", region: "us-east-1", prefix: "many/"),
        files: [{files}],
    ))),
])"#
        ))
        .args(&["run", "pipeline.ron", "--output", "json"]);
    let first = test.run();
    first.assert_code(0);
    assert!(first.combined().contains(&format!("listed s3://{BUCKET}/many/: 0 objects there")), "{}", first.dump());
    assert_eq!(first.combined().matches("uploaded f").count(), 20);
    let second = test.run();
    second.assert_code(0);
    assert_eq!(second.statuses()["publish"], "unchanged", "{}", second.dump());
    assert!(second.combined().contains(&format!("listed s3://{BUCKET}/many/: 20 objects there")));
    assert_eq!(second.combined().matches("is already published at").count(), 20);
    let state = moto.boto(
        Some(DEV),
        &format!(r#"result["keys"] = [o["Key"] for o in client("s3").list_objects_v2(Bucket="{BUCKET}")["Contents"]]"#),
    );
    let keys = state["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 20);
    assert!(keys.iter().all(|k| k.as_str().unwrap().starts_with("many/") && k.as_str().unwrap().ends_with(".txt")));
}

#[test]
fn publish_progress_reads_in_mib_and_assets_without_flooding_the_log() {
    let moto = Moto::start();
    kms_bucket(&moto);
    let test = moto
        .env(Test::new())
        .pipeline(
            r#"Pipeline(name: "assets", steps: [
    Step(id: "publish", kind: Publish(assets: Files(
        destination: (account: "111111111111", region: "us-east-1"),
        files: [(id: "big", path: "big.bin")],
    ))),
])"#,
        )
        .args(&["run", "pipeline.ron", "--output", "plain"]);
    big_file(&test, 40);
    let out = test.run();
    out.assert_code(0);
    out.assert_stdout_contains("[publish] 1/1 assets 40.0/40.0 MiB");
    let lines = out.combined().lines().filter(|l| l.contains(" MiB")).count();
    assert!(
        (1..=6).contains(&lines),
        "progress is sent at most every 200 ms and at the end: {lines} lines\n{}",
        out.dump()
    );
}

#[test]
fn a_publish_whose_credentials_act_in_another_account_is_stopped_by_the_preflight() {
    let moto = Moto::start();
    let test = moto
        .env(Test::new())
        .write("notes.txt", "x")
        .pipeline(
            r#"Pipeline(name: "assets", steps: [
    Step(id: "first", kind: Shell(commands: ["touch ran"])),
    Step(id: "publish", needs: ["first"], kind: Publish(assets: Files(
        destination: (account: "111111111111", region: "us-east-1", role: Caller),
        files: [(id: "notes", path: "notes.txt")],
    ))),
])"#,
        )
        .args(&["run", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(1);
    out.assert_stderr_contains(
        "`publish`: the caller's credentials act in account 123456789012, not in account 111111111111",
    );
    out.assert_stderr_contains("nothing ran");
    assert!(!test.exists("ran"), "no step ran");
}
