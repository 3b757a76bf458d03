//! The dashboard driven in a real headless Chromium over WebDriver (Debian's `chromium` and `chromium-driver`,
//! installed by `scripts/install-test-deps`): log in, open a live run's page, watch statuses change, click Approve,
//! see the run go on. Markup in a log line and in a step's command shows as text. Screenshots are written next to
//! the tests' output (`$CARGO_TARGET_TMPDIR/serve-dashboard-*.png`).

mod common;
mod serve_support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_until, GitRepo, Test};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use serve_support::{serve, with_secrets, PATIENCE, TOKEN};

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/install-test-deps installs chromium-driver)");
        assert!(
            wait_until(PATIENCE, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "chromedriver did not listen"
        );
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    let binary =
        ["/usr/bin/chromium", "/usr/lib/chromium/chromium"].into_iter().find(|p| std::path::Path::new(p).exists());
    let mut options = json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            "--window-size=1280,1400", format!("--user-data-dir={}", profile.display()),
        ],
    });
    if let Some(b) = binary {
        options["binary"] = json!(b);
    }
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

/// Poll `check` until it gives `Some`, failing after the deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_of(client: &Client, id: &str) -> Option<String> {
    client.find(Locator::Id(id)).await.ok()?.text().await.ok()
}

/// The rendered text of the first element matching `css`, read in one step in the page: the live updates replace
/// elements, so one found first may be gone (a stale reference) when its text is asked for.
async fn rendered_text(client: &Client, css: &str) -> String {
    let script = "const e = document.querySelector(arguments[0]); return e === null ? null : e.innerText;";
    let text = client.execute(script, vec![serde_json::json!(css)]).await.unwrap();
    text.as_str().unwrap_or_else(|| panic!("no element `{css}` on the page")).to_string()
}

fn screenshot_path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-dashboard-{name}.png"))
}

#[test]
fn the_dashboard_shows_a_run_live_and_approving_there_lets_it_go_on() {
    let repo = GitRepo::new();
    repo.commit_file("app.txt", "one\n", "first");
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let text = format!(
        r#"Pipeline(
    name: "prod",
    steps: [
        Step(id: "source", kind: Source(repository: "{repo}", reference: Branch("main"))),
        Step(id: "build", needs: ["source"], kind: Shell(commands: [
            "echo building",
            "echo '<script>window.pwned=1</script><img src=x onerror=window.pwned=2>'",
            "while [ ! -f {release} ]; do sleep 0.05; done",
        ])),
        Step(id: "test", needs: ["source"], kind: Shell(commands: ["echo testing"])),
        Step(id: "gate", needs: ["build", "test"], kind: Approval(message: "deploy to prod?")),
        Step(id: "deploy", needs: ["gate"], kind: Shell(commands: ["echo '<b>deployed</b>' # <script>window.pwned=3</script>"])),
    ],
)
"#,
        repo = repo.path_str(),
        release = release.display()
    );
    let test = with_secrets(Test::new()).pipeline(&text);
    let server = serve(&test, &["pipeline.ron"], &["--poll", "1h"]);
    let mut run_id = String::new();
    assert!(wait_until(PATIENCE, || {
        run_id = server.runs("prod").first().and_then(|r| r["run_id"].as_str()).unwrap_or("").to_string();
        !run_id.is_empty()
    }));
    let run_page = server.url(&format!("/pipelines/prod/runs/{run_id}"));
    let build = format!("status_{}", hex::encode("build"));
    let deploy = format!("status_{}", hex::encode("deploy"));

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    // The browser is driven from an async runtime; the server's HTTP helpers block, so they stay outside it.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let login = server.url(&format!("/login?next=/pipelines/prod/runs/{run_id}"));
    runtime.block_on(async {
        let client = browser(&driver, profile.path()).await;

        // Log in through the form.
        client.goto(&login).await.unwrap();
        client.find(Locator::Css("input[name=token]")).await.unwrap().send_keys(TOKEN).await.unwrap();
        client.find(Locator::Css("form.login button")).await.unwrap().click().await.unwrap();
        eventually("the run page after logging in", || async {
            client.current_url().await.ok().filter(|u| u.as_str() == run_page).map(|_| ())
        })
        .await;

        // The build runs (held at its gate file); released, the page shows it succeed without being reloaded by us.
        eventually("build running", || async { text_of(&client, &build).await.filter(|t| t == "running") }).await;
        std::fs::write(&release, "").unwrap();
        eventually("build succeeded", || async { text_of(&client, &build).await.filter(|t| t == "succeeded") }).await;

        // The approval waits: the page says what approving lets run, and offers the button.
        let approve =
            eventually("the Approve button", || async { client.find(Locator::Css("button.approve")).await.ok() }).await;
        let section = rendered_text(&client, "section.approval").await;
        assert!(
            section.contains("deploy to prod?")
                && section.contains("approving lets these run")
                && section.contains("deploy"),
            "{section}"
        );
        let shot = client.screenshot().await.unwrap();
        std::fs::write(screenshot_path("waiting"), &shot).unwrap();
        approve.click().await.unwrap();

        eventually("deploy succeeded", || async { text_of(&client, &deploy).await.filter(|t| t == "succeeded") }).await;
        eventually("the run succeeded", || async { text_of(&client, "run-status").await.filter(|t| t == "succeeded") })
            .await;
        let shot = client.screenshot().await.unwrap();
        std::fs::write(screenshot_path("succeeded"), &shot).unwrap();
        eprintln!("screenshots: {}", screenshot_path("*").display());

        // Markup from a log line and from a command is text on the page; none of it ran.
        let pwned = client.execute("return window.pwned === undefined ? null : window.pwned;", vec![]).await.unwrap();
        assert_eq!(pwned, serde_json::Value::Null, "a script from the run's output ran");
        // Collapsed once the run ended: read the text itself, not what is displayed.
        let script = format!("return document.getElementById('log_{}').textContent;", hex::encode("build"));
        let log = client.execute(&script, vec![]).await.unwrap().as_str().unwrap_or("").to_string();
        assert!(log.contains("<script>window.pwned=1</script>"), "{log}");
        let steps = rendered_text(&client, "table.steps").await;
        assert!(steps.contains("<script>window.pwned=3</script>"), "{steps}");
        assert_eq!(client.find_all(Locator::Css("main img")).await.unwrap().len(), 0);
        client.close().await.unwrap();
    });
    drop(runtime);
    let view = server.run("prod", &run_id);
    assert_eq!(view["nodes"][3]["outputs"]["APPROVED_BY"], "the dashboard");
}
