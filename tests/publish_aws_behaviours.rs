//! The Publish step against S3 behaviours the emulator cannot produce (moto never fails a part upload and checks
//! no permissions). Each test is named for the AWS behaviour it stands for and replays answers from the S3 API
//! reference page cited.

mod aws_double;
mod common;

use aws_double::{assumed_role, caller_identity, s3_error, s3_ok, ScriptedAws};
use common::{Output, Test};

const ACCOUNT: &str = "111111111111";

fn with_access() -> ScriptedAws {
    let aws = ScriptedAws::start();
    aws.script("AssumeRole", vec![assumed_role(ACCOUNT)]).script("GetCallerIdentity", vec![caller_identity(ACCOUNT)]);
    aws
}

fn publish(aws: &ScriptedAws, mb: usize) -> Output {
    let test = aws
        .env(Test::new())
        .pipeline(
            r#"Pipeline(name: "double", steps: [
    Step(id: "publish", kind: Publish(max_parallel: 1, assets: Files(
        destination: (account: "111111111111", region: "us-east-1", bucket: "assets"),
        files: [(id: "big", path: "big.bin")],
    ))),
])"#,
        )
        .args(&["run", "pipeline.ron", "--output", "json"]);
    std::fs::write(test.path().join("big.bin"), vec![7u8; mb * 1024 * 1024]).unwrap();
    test.run()
}

fn error_of(out: &Output, node: &str) -> String {
    out.json_lines()
        .into_iter()
        .find(|e| e["event"] == "node_finished" && e["node"] == node)
        .and_then(|e| e["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no error for {node}:\n{}", out.dump()))
}

/// https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPart.html (a part can fail: 500 InternalError, see
/// https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html) and
/// https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html: the upload is aborted, never
/// completed, so nothing appears under the final key.
#[test]
fn a_failed_part_upload_aborts_the_multipart_upload_and_never_completes_it() {
    let aws = with_access();
    aws.script("HeadObject", vec![s3_error(404, "NotFound", "Not Found")])
        .script(
            "GetBucketEncryption",
            vec![s3_error(
                404,
                "ServerSideEncryptionConfigurationNotFoundError",
                "The server side encryption configuration was not found",
            )],
        )
        .script(
            "CreateMultipartUpload",
            vec![s3_ok(
                200,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><InitiateMultipartUploadResult><Bucket>assets</Bucket><Key>k</Key><UploadId>VXBsb2FkIElE</UploadId></InitiateMultipartUploadResult>",
            )],
        )
        .script(
            "UploadPart",
            vec![
                s3_ok(200, "").with_header("ETag", "\"b54357faf0632cce46e942fa68356b38\""),
                s3_error(500, "InternalError", "We encountered an internal error. Please try again."),
            ],
        )
        .script("AbortMultipartUpload", vec![s3_ok(204, "")]);
    let out = publish(&aws, 20);
    out.assert_code(1);
    let error = error_of(&out, "publish");
    assert!(error.contains("asset `big` to s3://assets/"), "{error}");
    assert!(error.contains("InternalError: We encountered an internal error"), "AWS's reason quoted: {error}");
    let actions = aws.actions();
    assert!(actions.contains(&"AbortMultipartUpload".to_string()), "{actions:?}");
    assert!(!actions.contains(&"CompleteMultipartUpload".to_string()), "{actions:?}");
    assert!(!actions.contains(&"PutObject".to_string()), "{actions:?}");
}

/// https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html: without s3:GetObject/s3:ListBucket, HEAD
/// answers 403 Forbidden (no body). The asset fails naming destination and role; nothing is uploaded.
#[test]
fn head_object_forbidden_fails_the_asset_as_access_denied_and_uploads_nothing() {
    let aws = with_access();
    aws.script("HeadObject", vec![s3_error(403, "Forbidden", "Forbidden")]);
    let out = publish(&aws, 1);
    out.assert_code(1);
    let error = error_of(&out, "publish");
    assert!(error.contains("access denied"), "{error}");
    assert!(error.contains("cdk-hnb659fds-file-publishing-role-111111111111-us-east-1"), "{error}");
    let actions = aws.actions();
    assert!(!actions.iter().any(|a| a == "PutObject" || a == "CreateMultipartUpload"), "{actions:?}");
}
