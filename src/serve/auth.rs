//! Who may do what. Whatever changes state (trigger, approve, reject, cancel) needs the server's token: as a bearer
//! token (`Authorization: Bearer ...`, for the API and scripts), or through a session a person opens by typing the
//! token into the login form (an `HttpOnly`, `SameSite=Strict` cookie), whose forms carry a CSRF token tied to the
//! session (the synchronizer token pattern, OWASP's CSRF prevention cheat sheet). Tokens are compared in constant
//! time. Reading is open unless the server runs with `--private`, which asks the same of every page.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "runner_session";
/// How long a session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 1000;

struct Session {
    csrf: String,
    created: Instant,
}

/// The token, and the sessions opened with it.
pub struct Auth {
    token: String,
    /// Cookies only over HTTPS (when the public URL is https).
    secure_cookie: bool,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Someone allowed to act, and how they proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Bearer,
    Session,
}

impl Actor {
    /// Who answered, as the run's log says it.
    pub fn describe(&self) -> &'static str {
        match self {
            Actor::Bearer => "the API",
            Actor::Session => "the dashboard",
        }
    }
}

/// Why a request may not act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token and no session: 401.
    Unauthenticated,
    /// A session, but the form's CSRF token is missing or wrong: 403.
    Forgery,
}

/// Constant-time equality of two secrets (their lengths are not secret).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

impl Auth {
    pub fn new(token: String, secure_cookie: bool) -> Auth {
        Auth { token, secure_cookie, sessions: Mutex::new(HashMap::new()) }
    }

    pub fn check_token(&self, given: &str) -> bool {
        same_secret(given.trim().as_bytes(), self.token.as_bytes())
    }

    /// A valid `Authorization: Bearer <token>`.
    pub fn bearer(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.check_token(t))
    }

    /// The request's live session: its CSRF token.
    pub fn session(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let expired = sessions.get(&id).map(|s| s.created.elapsed() > SESSION_LIFETIME)?;
        if expired {
            sessions.remove(&id);
            return None;
        }
        sessions.get(&id).map(|s| s.csrf.clone())
    }

    /// Open a session: the `Set-Cookie` value.
    pub fn login(&self) -> String {
        let id = super::random_hex(32);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.created.elapsed() <= SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| k.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), Session { csrf: super::random_hex(32), created: Instant::now() });
        format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_LIFETIME.as_secs(),
            if self.secure_cookie { "; Secure" } else { "" }
        )
    }

    /// Close the request's session: the `Set-Cookie` value that clears it.
    pub fn logout(&self, headers: &HeaderMap) -> String {
        if let Some(id) = cookie(headers, COOKIE) {
            self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }

    /// May this request change state? A bearer token, or a session whose CSRF token the form carries.
    pub fn authorize(&self, headers: &HeaderMap, csrf: Option<&str>) -> Result<Actor, Refusal> {
        if self.bearer(headers) {
            return Ok(Actor::Bearer);
        }
        match self.session(headers) {
            Some(expected) => match csrf {
                Some(given) if same_secret(given.as_bytes(), expected.as_bytes()) => Ok(Actor::Session),
                _ => Err(Refusal::Forgery),
            },
            None => Err(Refusal::Unauthenticated),
        }
    }

    /// May this request read (always, unless `private`)?
    pub fn can_read(&self, headers: &HeaderMap, private: bool) -> bool {
        !private || self.bearer(headers) || self.session(headers).is_some()
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The token of a server started without `--token`: the one in `path` when there is one, else a new random one
/// written there (readable by the owner only).
pub fn make_token_file(path: &Path) -> Result<String, String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let token = text.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let token = super::random_hex(32);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("error: cannot write the token to {}: {e}\n", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .map_err(|e| format!("error: cannot write the token to {}: {e}\n", path.display()))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_bearer_token_may_act_and_a_wrong_one_may_not() {
        let auth = Auth::new("s3cret".into(), false);
        assert_eq!(auth.authorize(&with(header::AUTHORIZATION, "Bearer s3cret"), None), Ok(Actor::Bearer));
        assert_eq!(auth.authorize(&with(header::AUTHORIZATION, "Bearer s3cre"), None), Err(Refusal::Unauthenticated));
        assert_eq!(auth.authorize(&HeaderMap::new(), None), Err(Refusal::Unauthenticated));
    }

    #[test]
    fn a_session_acts_only_with_its_own_csrf_token() {
        let auth = Auth::new("t".into(), false);
        let set_cookie = auth.login();
        let pair = set_cookie.split(';').next().unwrap();
        let headers = with(header::COOKIE, pair);
        let csrf = auth.session(&headers).unwrap();
        assert_eq!(auth.authorize(&headers, Some(&csrf)), Ok(Actor::Session));
        assert_eq!(auth.authorize(&headers, Some("forged")), Err(Refusal::Forgery));
        assert_eq!(auth.authorize(&headers, None), Err(Refusal::Forgery));
        auth.logout(&headers);
        assert_eq!(auth.authorize(&headers, Some(&csrf)), Err(Refusal::Unauthenticated));
    }

    #[test]
    fn reading_is_open_unless_private() {
        let auth = Auth::new("t".into(), false);
        assert!(auth.can_read(&HeaderMap::new(), false));
        assert!(!auth.can_read(&HeaderMap::new(), true));
        assert!(auth.can_read(&with(header::AUTHORIZATION, "Bearer t"), true));
    }

    #[test]
    fn a_token_file_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let first = make_token_file(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(make_token_file(&path).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
