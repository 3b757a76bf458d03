//! A real smart-HTTP git server for tests: `git http-backend` run as a CGI program behind a tiny HTTP/1.1 server
//! on a loopback port, demanding `Authorization: Basic` with a given token as the password (any user name).
//! One request per connection (`Connection: close`); every request is recorded.
//!
//! Over plain `http://` ([`GitHttpServer::start`]) or `https://` ([`GitHttpServer::start_https`]): TLS terminated
//! with rustls, the server's certificate issued by a throwaway [`TestCa`] made with rcgen.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Authorization` header carried the right token.
    pub authorized: bool,
    /// It came over TLS.
    pub tls: bool,
    pub status: u16,
    /// The request body (git's upload-pack negotiation), as text.
    pub body: String,
}

pub struct GitHttpServer {
    pub port: u16,
    tls: bool,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
}

/// A throwaway certificate authority: its certificate (PEM) is what a client must trust.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA certificate");
        TestCa { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// The authority's certificate, PEM: the file to point `SSL_CERT_FILE` at.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (IP addresses and DNS names; the first is also the common name) signed by
    /// this authority, as a rustls server configuration (sending the server's certificate alone, as servers whose
    /// authority is known to their clients do).
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("names");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        let chain = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        // The provider named, not left to the crate features the whole build happens to enable.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate and key");
        Arc::new(config)
    }
}

/// `git http-backend`, wherever this git keeps it.
fn http_backend() -> PathBuf {
    let exec_path = Command::new("git").arg("--exec-path").output().expect("run git --exec-path");
    let dir = String::from_utf8_lossy(&exec_path.stdout).trim().to_string();
    let backend = Path::new(&dir).join("git-http-backend");
    assert!(backend.exists(), "{} is missing: the test needs git's http-backend", backend.display());
    backend
}

impl GitHttpServer {
    /// Serves the repositories under `root` (`http://127.0.0.1:PORT/<dir name>`); `token`: the password every
    /// request must carry (`None`: no authentication).
    pub fn start(root: &Path, token: Option<&str>) -> GitHttpServer {
        GitHttpServer::serve_on(root, token, None)
    }

    /// The same over HTTPS (`https://127.0.0.1:PORT/<dir name>`), presenting the certificate of `tls`.
    pub fn start_https(root: &Path, token: Option<&str>, tls: Arc<rustls::ServerConfig>) -> GitHttpServer {
        GitHttpServer::serve_on(root, token, Some(tls))
    }

    /// The listening socket is bound before this returns, so a client may connect at once (the kernel queues the
    /// connection until the accept loop takes it): no readiness to wait for.
    fn serve_on(root: &Path, token: Option<&str>, tls: Option<Arc<rustls::ServerConfig>>) -> GitHttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let backend = http_backend();
        let (root, token) = (root.to_path_buf(), token.map(str::to_string));
        let is_tls = tls.is_some();
        let thread = {
            let (stop, requests, connections) = (Arc::clone(&stop), Arc::clone(&requests), Arc::clone(&connections));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    connections.fetch_add(1, Ordering::SeqCst);
                    // A client that stops talking cannot keep a thread forever.
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                    let (backend, root, token, requests, tls) =
                        (backend.clone(), root.clone(), token.clone(), Arc::clone(&requests), tls.clone());
                    std::thread::spawn(move || {
                        let request = match tls {
                            None => serve(stream, false, &backend, &root, token.as_deref()),
                            Some(config) => serve_tls(stream, config, &backend, &root, token.as_deref()),
                        };
                        if let Some(request) = request {
                            requests.lock().unwrap().push(request);
                        }
                    });
                }
            })
        };
        GitHttpServer { port, tls: is_tls, stop, thread: Some(thread), requests, connections }
    }

    pub fn url(&self, name: &str) -> String {
        self.url_at("127.0.0.1", name)
    }

    /// The URL naming the server by `host` (`localhost`: a name rather than the address).
    pub fn url_at(&self, host: &str, name: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}/{name}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// TCP connections accepted (with or without a request on them: a client that gave up during or right after
    /// the TLS handshake counts too).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(stream: &mut impl Write, status: u16, reason: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// TLS on an accepted connection, then the request inside it; `None` when the handshake failed or the client hung up
/// without a request (e.g. because it did not trust the certificate).
fn serve_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    backend: &Path,
    root: &Path,
    token: Option<&str>,
) -> Option<Request> {
    let connection = rustls::ServerConnection::new(config).ok()?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let request = serve(&mut tls, true, backend, root, token);
    tls.conn.send_close_notify();
    let _ = tls.flush();
    request
}

/// Handles one request on a connection; `None` when the connection carried no request (the wake-up connect).
fn serve<S: Read + Write>(stream: S, tls: bool, backend: &Path, root: &Path, token: Option<&str>) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                let mut end = String::new();
                let _ = reader.read_line(&mut end);
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0; 2];
            reader.read_exact(&mut crlf).ok()?;
        }
        body
    } else {
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        body
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let authorized = match token {
        None => true,
        Some(token) => header("authorization")
            .and_then(|v| v.strip_prefix("Basic ").map(str::to_string))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
            .and_then(|raw| String::from_utf8(raw).ok())
            .is_some_and(|pair| pair.split_once(':').is_some_and(|(_, password)| password == token)),
    };
    let mut request = Request {
        method: method.clone(),
        path: path.to_string(),
        query: query.to_string(),
        authorized,
        tls,
        status: 401,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    if !authorized {
        let headers = [("WWW-Authenticate".to_string(), "Basic realm=\"git\"".to_string())];
        respond(reader.get_mut(), 401, "Unauthorized", &headers, b"authentication required\n");
        return Some(request);
    }
    let mut cgi = Command::new(backend);
    cgi.env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ct) = header("content-type") {
        cgi.env("CONTENT_TYPE", ct);
    }
    if let Some(p) = header("git-protocol") {
        cgi.env("GIT_PROTOCOL", p);
    }
    if let Some(enc) = header("content-encoding") {
        cgi.env("HTTP_CONTENT_ENCODING", enc);
    }
    let mut child = cgi.spawn().ok()?;
    let mut stdin = child.stdin.take()?;
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let output = child.wait_with_output().ok()?;
    let _ = feeder.join();
    let out = output.stdout;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, body) = match split {
        Some((i, n)) => (String::from_utf8_lossy(&out[..i]).into_owned(), out[i + n..].to_vec()),
        None => (String::new(), out.clone()),
    };
    let mut status = 200;
    let mut response_headers = Vec::new();
    for h in head.lines() {
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                status = v.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(500);
            } else {
                response_headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    request.status = status;
    respond(reader.get_mut(), status, if status == 200 { "OK" } else { "Error" }, &response_headers, &body);
    Some(request)
}
