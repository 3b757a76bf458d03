//! Source steps over HTTPS against a real smart-HTTP git server (`git http-backend` behind a small HTTP server, TLS
//! by rustls) whose certificate comes from a throwaway certificate authority made for each test. The runner trusts
//! that authority the way a user with a private CA does: `SSL_CERT_FILE` names a PEM file holding its certificate
//! (libgit2 verifies with OpenSSL's default verify paths, which read `SSL_CERT_FILE` and `SSL_CERT_DIR`).

mod common;
mod git_http;

use common::*;
use git_http::{GitHttpServer, TestCa};
use tempfile::TempDir;

/// A repository served over HTTPS, `main` with two commits, and the authority that issued the server's certificate.
struct Remote {
    work: GitRepo,
    _root: TempDir,
    server: GitHttpServer,
    token: String,
    /// A directory holding `ca.pem`, the authority's certificate.
    ca_dir: TempDir,
}

/// The server's certificate names `names` (IP addresses or DNS names).
fn https_remote(names: &[&str]) -> Remote {
    let work = GitRepo::new();
    work.commit_file("file.txt", "first\n", "first commit");
    work.commit_file("file.txt", "main over tls\n", "second: main");
    let root = bare_clone(&work);
    let ca = TestCa::new("runner test CA");
    let ca_dir = tempfile::Builder::new().prefix("runner-test-ca-").tempdir().unwrap();
    std::fs::write(ca_dir.path().join("ca.pem"), ca.pem()).unwrap();
    let token = unique_secret("tls-tok");
    let server = GitHttpServer::start_https(root.path(), Some(&token), ca.server_config(names));
    Remote { work, _root: root, server, token, ca_dir }
}

impl Remote {
    /// `https://127.0.0.1:PORT/infra.git`.
    fn url(&self) -> String {
        self.server.url("infra.git")
    }

    fn ca_file(&self) -> String {
        self.ca_dir.path().join("ca.pem").to_str().unwrap().to_string()
    }
}

/// Fetches `main` of the remote at `url` with a token from `RUNNER_TEST_GIT_TOKEN`, then copies `file.txt` and
/// COMMIT_ID to files in the test's directory. `trust_ca`: `SSL_CERT_FILE` names the remote's CA; else neither
/// `SSL_CERT_FILE` nor `SSL_CERT_DIR` is set, so only the system's authorities are trusted.
fn run_source(remote: &Remote, url: &str, trust_ca: bool) -> (Test, Output) {
    let test = Test::new();
    let out_dir = test.dir();
    let text = format!(
        r#"Pipeline(
    name: "tls",
    steps: [
        Step(id: "source", kind: Source(repository: "{url}", reference: Branch("main"), auth: Token(Env("RUNNER_TEST_GIT_TOKEN")))),
        Step(
            id: "inspect",
            needs: ["source"],
            kind: Shell(commands: [
                "cp file.txt {out_dir}/seen.txt",
                "printf '%s' \"$COMMIT_ID\" > {out_dir}/commit.txt",
            ]),
        ),
    ],
)
"#
    );
    let test = test
        .pipeline(&text)
        .args(&["run", "pipeline.ron"])
        .env("RUNNER_TEST_GIT_TOKEN", &remote.token)
        .env_remove("SSL_CERT_DIR");
    let test = if trust_ca { test.env("SSL_CERT_FILE", &remote.ca_file()) } else { test.env_remove("SSL_CERT_FILE") };
    let out = test.run();
    (test, out)
}

#[test]
fn a_source_clones_over_https_with_a_token() {
    let remote = https_remote(&["127.0.0.1", "localhost"]);
    assert!(remote.url().starts_with("https://127.0.0.1:"), "{}", remote.url());
    let (test, out) = run_source(&remote, &remote.url(), true);
    out.assert_code(0);
    assert_eq!(test.read("seen.txt").as_deref(), Some("main over tls\n"), "{}", out.dump());
    assert_eq!(test.read("commit.txt"), Some(remote.work.rev_parse("main")), "{}", out.dump());

    let requests = remote.server.requests();
    assert!(requests.iter().all(|r| r.tls), "a request without TLS: {requests:?}");
    assert!(
        requests.iter().any(|r| r.authorized && r.method == "POST" && r.path.ends_with("git-upload-pack")),
        "no authorized fetch reached the server: {requests:?}"
    );
    assert_secret_nowhere(test.path(), &out, &remote.token);
    assert_run_recorded(test.path());
}

#[test]
fn a_server_certificate_from_an_unknown_authority_is_refused() {
    let remote = https_remote(&["127.0.0.1", "localhost"]);
    let (test, out) = run_source(&remote, &remote.url(), false);
    out.assert_code(1)
        .assert_output_contains(&format!("cannot fetch {} at branch `main`", remote.url()))
        .assert_output_contains("the server's certificate is not trusted (the SSL certificate is invalid)")
        .assert_output_contains("set SSL_CERT_FILE to a PEM bundle that includes that authority's certificate");
    assert!(!test.exists("seen.txt"), "the downstream step ran\n{}", out.dump());
    assert!(remote.server.connections() > 0, "the runner never connected to the server\n{}", out.dump());
    // The connection was given up after the handshake, before any request: the token was never sent over it.
    let requests = remote.server.requests();
    assert!(requests.iter().all(|r| !r.authorized), "the token was sent over an unverified connection: {requests:?}");
    assert!(requests.is_empty(), "requests over an unverified connection: {requests:?}");
    assert_secret_nowhere(test.path(), &out, &remote.token);
    assert_run_recorded(test.path());
}

#[test]
fn a_certificate_for_another_host_is_refused() {
    // Issued by the trusted authority, but for `example.test` only: not for `localhost`, nor for 127.0.0.1.
    let remote = https_remote(&["example.test"]);
    let by_name = remote.server.url_at("localhost", "infra.git");
    let (test, out) = run_source(&remote, &by_name, true);
    out.assert_code(1)
        .assert_output_contains(&format!("cannot fetch {by_name} at branch `main`"))
        .assert_output_contains(
            "the server's certificate is not for `localhost` (hostname does not match certificate)",
        );
    assert!(!test.exists("seen.txt"), "the downstream step ran\n{}", out.dump());
    assert!(remote.server.connections() > 0, "the runner never connected to the server\n{}", out.dump());
    assert!(remote.server.requests().is_empty(), "requests to the wrong host: {:?}", remote.server.requests());
    assert_secret_nowhere(test.path(), &out, &remote.token);
    assert_run_recorded(test.path());

    // By address: refused too, and nothing sent. The message is libgit2's, not the mismatch: libgit2 1.9 finds no
    // address among the certificate's names (only DNS names), falls back to the subject's common name with a stale
    // index (one past the names it looked at), finds no entry there and reports a failed TLS connection ("SSL error:
    // received early EOF"). A subject with the common name second (e.g. O=..., CN=...) gets the mismatch message.
    let connections = remote.server.connections();
    let (test, out) = run_source(&remote, &remote.url(), true);
    out.assert_code(1).assert_output_contains(&format!("cannot fetch {} at branch `main`", remote.url()));
    assert!(!test.exists("seen.txt"), "the downstream step ran\n{}", out.dump());
    assert!(remote.server.connections() > connections, "the runner never connected to the server\n{}", out.dump());
    assert!(remote.server.requests().is_empty(), "requests to the wrong host: {:?}", remote.server.requests());
    assert_secret_nowhere(test.path(), &out, &remote.token);
    assert_run_recorded(test.path());
}
