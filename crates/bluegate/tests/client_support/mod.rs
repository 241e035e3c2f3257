//! Helpers for the `bluegate app` end-to-end tests: a member, app and loopback certificates from the test
//! community, a scripted browser that signs in and consents through the HTML forms (DESIGN §2 form
//! contract), and the CLI run as a child process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common;

pub const PASSWORD: &str = "correct horse battery";

pub async fn add_member(s: &common::TestServer, username: &str, patients: &[&str]) {
    let m = bluegate_store::MemberRecord {
        id: format!("member-{username}"),
        username: username.to_string(),
        password_hash: bluegate_server::passwords::hash(PASSWORD).unwrap(),
        fhir_user: Some(format!("Patient/{}", patients[0])),
        patients: patients.iter().map(|p| p.to_string()).collect(),
        disabled: false,
        created_at: time::OffsetDateTime::now_utc(),
    };
    s.running.state.store.insert_member(&m).await.unwrap();
}

/// Files made by `bluegate pki issue` from the test community: (chain, key).
pub fn issue(s: &common::TestServer, prefix: &Path, args: &[&str]) -> (PathBuf, PathBuf) {
    let ca = s.pki.s("");
    let out = prefix.display().to_string();
    let mut all = vec!["pki", "issue", "--ca-dir", &ca, "--out", &out];
    all.extend_from_slice(args);
    common::run_ok(&all);
    let p = |suffix: &str| PathBuf::from(format!("{out}{suffix}"));
    (p("-chain.pem"), p("-key.pem"))
}

/// The app's UDAP client certificate (URI SAN `uri`).
pub fn app_cert(s: &common::TestServer, dir: &Path, uri: &str, key: &str) -> (PathBuf, PathBuf) {
    issue(
        s,
        &dir.join(format!("app-{key}")),
        &["--kind", "udap-client", "--uri", uri, "--key", key],
    )
}

/// A TLS certificate for the loopback redirect listener (127.0.0.1), from the test community.
pub fn loopback_tls(s: &common::TestServer, dir: &Path) -> (PathBuf, PathBuf) {
    issue(
        s,
        &dir.join("loopback"),
        &["--kind", "tls-server", "--ip", "127.0.0.1", "--key", "p256"],
    )
}

/// A browser: keeps cookies, never follows redirects, sends the server's Origin on POST.
pub struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    origin: String,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new(s: &common::TestServer) -> Self {
        Self::for_origin(&s.pki.path("root-ca.pem"), &s.public_url)
    }

    /// A browser for the server at `origin` whose TLS certificate chains to `root_pem`.
    pub fn for_origin(root_pem: &Path, origin: &str) -> Self {
        Browser {
            http: common::https_client(root_pem),
            cookies: HashMap::new(),
            origin: origin.to_string(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn absorb(&mut self, resp: reqwest::Response) -> Page {
        for sc in resp.headers().get_all("set-cookie") {
            let pair = sc.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        Page {
            status,
            location,
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let resp = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.absorb(resp).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("origin", &self.origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.absorb(resp).await
    }
}

/// `(name, value, checked)` of every `<input>`.
fn inputs(html: &str) -> Vec<HashMap<String, String>> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input") {
        let end = rest[i..].find('>').map(|e| i + e).unwrap_or(rest.len());
        let tag = &rest[i + 6..end];
        let mut attrs = HashMap::new();
        let mut t = tag;
        while let Some(eq) = t.find('=') {
            let name = t[..eq]
                .trim()
                .rsplit(char::is_whitespace)
                .next()
                .unwrap_or("")
                .to_string();
            let after = &t[eq + 1..];
            let (value, next) = if let Some(q) = after.strip_prefix('"') {
                let e = q.find('"').unwrap_or(q.len());
                (&q[..e], &q[(e + 1).min(q.len())..])
            } else {
                let e = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..e], &after[e..])
            };
            let v = value
                .replace("&quot;", "\"")
                .replace("&#x27;", "'")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&#x2F;", "/")
                .replace("&amp;", "&");
            attrs.insert(name, v);
            t = next;
        }
        out.push(attrs);
        rest = &rest[end..];
    }
    out
}

fn field(html: &str, name: &str) -> Option<String> {
    inputs(html)
        .into_iter()
        .find(|a| a.get("name").map(String::as_str) == Some(name))
        .and_then(|a| a.get("value").cloned())
}

fn values(html: &str, name: &str) -> Vec<String> {
    inputs(html)
        .into_iter()
        .filter(|a| a.get("name").map(String::as_str) == Some(name))
        .filter_map(|a| a.get("value").cloned())
        .collect()
}

/// Follow an authorization URL as the member: sign in, pick the first patient if asked, then `decision`
/// (`allow` with every scope ticked, or `deny`). Returns the redirect back to the app.
pub async fn sign_in(
    b: &mut Browser,
    s: &common::TestServer,
    url: &str,
    user: &str,
    decision: &str,
) -> String {
    sign_in_at(b, &s.public_url, url, user, PASSWORD, decision).await
}

/// [`sign_in`] at any server (`public_url`), with the member's password.
pub async fn sign_in_at(
    b: &mut Browser,
    public_url: &str,
    url: &str,
    user: &str,
    password: &str,
    decision: &str,
) -> String {
    let at = |path: &str| format!("{public_url}{path}");
    let page = b.get(url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let txn = field(&page.body, "txn").expect("login form");
    let csrf = field(&page.body, "csrf").expect("csrf");
    let mut page = b
        .post(
            &at("/oauth/login"),
            &[
                ("username", user),
                ("password", password),
                ("txn", &txn),
                ("csrf", &csrf),
            ],
        )
        .await;
    if page.status == 302 {
        // A remembered consent goes straight back to the app.
        return page.location.unwrap();
    }
    assert_eq!(page.status, 200, "{}", page.body);
    let choices = values(&page.body, "patient");
    if choices.len() >= 2 {
        let txn = field(&page.body, "txn").unwrap();
        page = b
            .post(
                &at("/oauth/patient"),
                &[("patient", &choices[0]), ("txn", &txn), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    let scopes = values(&page.body, "scope");
    assert!(!scopes.is_empty(), "no consent form: {}", page.body);
    let txn = field(&page.body, "txn").unwrap();
    let mut form: Vec<(&str, &str)> = vec![("txn", &txn), ("csrf", &csrf), ("decision", decision)];
    let patient = field(&page.body, "patient");
    if let Some(p) = &patient {
        form.push(("patient", p));
    }
    for sc in &scopes {
        form.push(("scope", sc));
    }
    let page = b.post(&at("/oauth/consent"), &form).await;
    assert_eq!(page.status, 302, "{}", page.body);
    page.location.unwrap()
}

/// `bluegate ARGS` as a child with piped output.
pub fn spawn(args: &[String]) -> Child {
    Command::new(common::bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bluegate runs")
}

/// Read the child's stdout until a line starting with `https://` (the authorization URL); returns it and
/// the lines read so far. The reader keeps the rest of stdout.
pub fn read_auth_url(
    child: &mut Child,
) -> (String, Vec<String>, BufReader<std::process::ChildStdout>) {
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the CLI ended before printing the URL: {lines:?}");
        let line = line.trim_end().to_string();
        lines.push(line.clone());
        if line.starts_with("https://") {
            return (line, lines, reader);
        }
    }
}

pub fn query(url: &str, k: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.into_owned())
}

#[cfg(unix)]
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}
