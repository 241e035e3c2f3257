//! The SMART standalone launch, app side (smart.md C-4..C-8, udap.md UX-4): the authorization URL with a
//! CSPRNG `state` (256 bits), PKCE S256 and `aud`; `nonce` with `openid`; the redirect checked against that
//! `state` in constant time before anything else is read; a loopback redirect listener for native apps
//! (RFC 8252 §7.3), over plain HTTP or, for servers that require https redirect URIs (UDAP, UR-12), TLS.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::Error;
use crate::secret::Secret;
use crate::token::{ClientAuth, TokenSet};

/// What goes into an authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest<'a> {
    pub authorization_endpoint: &'a str,
    pub client_id: &'a str,
    /// Exactly as registered.
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    /// The FHIR base the app will call (`aud`, C-4).
    pub fhir_base: &'a str,
}

/// An authorization request in flight: the URL to open and what the redirect must match. Keep it in
/// memory only (it holds the PKCE verifier).
pub struct PendingAuthorization {
    url: String,
    redirect_uri: String,
    state: Secret,
    code_verifier: Secret,
    nonce: Option<Secret>,
}

impl std::fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// A parsed redirect: the code, or the server's error.
fn pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl PendingAuthorization {
    /// A fresh request: `state` and the PKCE verifier are 256 bits from the CSPRNG (43 base64url
    /// characters each), the challenge is S256, and a `nonce` is added when `openid` is requested.
    pub fn new(req: &AuthorizationRequest<'_>) -> Result<Self, Error> {
        let mut url = url::Url::parse(req.authorization_endpoint)
            .map_err(|_| Error::bad(req.authorization_endpoint, "not an absolute URL"))?;
        if url.scheme() != "https" {
            return Err(Error::bad(
                req.authorization_endpoint,
                "the authorization endpoint must be https",
            ));
        }
        let state = crate::util::random_b64url(32);
        let verifier = crate::util::random_b64url(32);
        let challenge = bluegate_core::authorize::s256(&verifier);
        let nonce = req
            .scope
            .split_whitespace()
            .any(|s| s == "openid")
            .then(|| crate::util::random_b64url(32));
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", req.client_id)
                .append_pair("redirect_uri", req.redirect_uri)
                .append_pair("scope", req.scope)
                .append_pair("state", &state)
                .append_pair("aud", req.fhir_base)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(n) = &nonce {
                q.append_pair("nonce", n);
            }
        }
        Ok(PendingAuthorization {
            url: url.to_string(),
            redirect_uri: req.redirect_uri.to_string(),
            state: Secret::new(state),
            code_verifier: Secret::new(verifier),
            nonce: nonce.map(Secret::new),
        })
    }

    /// The URL to open in the user's browser.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    pub fn code_verifier(&self) -> &Secret {
        &self.code_verifier
    }

    pub fn nonce(&self) -> Option<&Secret> {
        self.nonce.as_ref()
    }

    /// Check a redirect's query string (C-5, C-8): exactly one `state`, equal to ours (constant time),
    /// before anything else; then `error` (with `error_description`) or exactly one `code`.
    pub fn callback(&self, query: &str) -> Result<String, Error> {
        let p = pairs(query);
        let one = |k: &str| -> Option<&str> {
            let mut it = p.iter().filter(|(n, _)| n == k);
            match (it.next(), it.next()) {
                (Some((_, v)), None) => Some(v.as_str()),
                _ => None,
            }
        };
        match one("state") {
            Some(s) if crate::util::ct_eq(s, self.state.expose()) => {}
            _ => return Err(Error::StateMismatch),
        }
        if let Some(e) = one("error") {
            return Err(Error::Authorization {
                error: crate::util::printable(e, 100),
                description: one("error_description").map(str::to_string),
            });
        }
        match one("code") {
            Some(c) if !c.is_empty() => Ok(c.to_string()),
            _ => Err(Error::MissingCode),
        }
    }
}

/// Exchange the code and, when an `id_token` comes back, validate it against the issuer (signature via
/// the issuer's JWKS, `iss`, `aud`, `exp`, our `nonce`). An `id_token` is required when `openid` was
/// granted and a nonce was sent.
pub async fn finish(
    http: &reqwest::Client,
    token_endpoint: &str,
    issuer: Option<&str>,
    auth: &ClientAuth,
    pending: &PendingAuthorization,
    code: &str,
) -> Result<TokenSet, Error> {
    let mut tokens = crate::token::exchange_code(
        http,
        token_endpoint,
        auth,
        code,
        &pending.redirect_uri,
        pending.code_verifier.expose(),
    )
    .await?;
    let granted_openid = tokens
        .scope
        .as_deref()
        .is_some_and(|s| s.split_whitespace().any(|x| x == "openid"));
    match (&tokens.id_token, issuer) {
        (Some(id), Some(issuer)) => {
            let claims = crate::oidc::verify_id_token(
                http,
                id.expose(),
                &crate::oidc::Expected {
                    issuer,
                    client_id: auth.client_id(),
                    nonce: pending.nonce.as_ref().map(Secret::expose),
                    now: crate::util::now(),
                    leeway: 60,
                },
            )
            .await?;
            tokens.fhir_user = claims
                .get("fhirUser")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string);
        }
        (Some(_), None) => {
            return Err(Error::IdToken(
                "the server does not advertise an issuer to validate it against".into(),
            ))
        }
        (None, _) if granted_openid && pending.nonce.is_some() => {
            return Err(Error::IdToken(
                "openid was granted but no id_token was returned".into(),
            ))
        }
        (None, _) => {}
    }
    Ok(tokens)
}

/// TLS for the loopback listener (a certificate for 127.0.0.1/localhost the browser trusts).
pub fn loopback_tls(chain_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Identity(format!("loopback TLS certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Identity(
            "loopback TLS certificate: none found".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Identity(format!("loopback TLS key: {e}")))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| Error::Identity(format!("loopback TLS: {e}")))
}

/// A one-shot redirect listener on the loopback interface (RFC 8252 §7.3).
pub struct LoopbackListener {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    path: String,
    redirect_uri: String,
}

/// Largest request head read from the browser.
const MAX_HEAD: usize = 16 * 1024;

struct Hit {
    query: String,
    reply: tokio::sync::oneshot::Sender<bool>,
}

impl LoopbackListener {
    /// Listen for `redirect_uri`, which must be `http://` or `https://` on `127.0.0.1`, `[::1]` or
    /// `localhost` with an explicit port (it must match the registered URI exactly, so the port is fixed;
    /// port 0 picks a free one, see [`LoopbackListener::redirect_uri`]). `https` needs `tls`.
    pub async fn bind(
        redirect_uri: &str,
        tls: Option<rustls::ServerConfig>,
    ) -> Result<Self, Error> {
        let bad = |m: &str| Error::Identity(format!("redirect URI `{redirect_uri}`: {m}"));
        let u = url::Url::parse(redirect_uri).map_err(|_| bad("not an absolute URI"))?;
        let ip: std::net::IpAddr = match u.host() {
            Some(url::Host::Ipv4(a)) if a.is_loopback() => a.into(),
            Some(url::Host::Ipv6(a)) if a.is_loopback() => a.into(),
            Some(url::Host::Domain("localhost")) => std::net::Ipv4Addr::LOCALHOST.into(),
            _ => {
                return Err(bad(
                    "the listener only serves loopback (127.0.0.1, [::1], localhost)",
                ))
            }
        };
        let tls = match (u.scheme(), tls) {
            ("http", _) => None,
            ("https", Some(cfg)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
            ("https", None) => {
                return Err(bad(
                    "an https redirect URI needs a TLS certificate for the listener",
                ))
            }
            _ => return Err(bad("must be http or https")),
        };
        let port = u.port().ok_or_else(|| bad("needs an explicit port"))?;
        if u.fragment().is_some() {
            return Err(bad("must not have a fragment"));
        }
        let listener = TcpListener::bind((ip, port))
            .await
            .map_err(|e| Error::io(format!("listening on {ip}:{port}"), e))?;
        let actual = listener
            .local_addr()
            .map_err(|e| Error::io("loopback listener", e))?
            .port();
        let mut final_uri = u.clone();
        if port == 0 {
            let _ = final_uri.set_port(Some(actual));
        }
        Ok(LoopbackListener {
            listener,
            tls,
            path: u.path().to_string(),
            redirect_uri: final_uri.to_string(),
        })
    }

    /// The redirect URI served (with the real port when bound to port 0).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Wait for the redirect and check it with [`PendingAuthorization::callback`]. Requests for other
    /// paths (a browser's `/favicon.ico`) get 404 and are otherwise ignored; the first request on the
    /// redirect path decides: a wrong `state` aborts the launch (nothing is exchanged).
    pub async fn wait(
        self,
        pending: &PendingAuthorization,
        timeout: Duration,
    ) -> Result<String, Error> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Hit>(8);
        let path = Arc::new(self.path.clone());
        let listener = self.listener;
        let tls = self.tls;
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                let tls = tls.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    let work = async {
                        match tls {
                            Some(acc) => {
                                if let Ok(s) = acc.accept(sock).await {
                                    serve(s, &path, tx).await;
                                }
                            }
                            None => serve(sock, &path, tx).await,
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(30), work).await;
                });
            }
        });
        let result = tokio::time::timeout(timeout, async {
            let hit = rx.recv().await.ok_or(Error::MissingCode)?;
            let outcome = pending.callback(&hit.query);
            let _ = hit.reply.send(outcome.is_ok());
            outcome
        })
        .await;
        // Let the browser get its page before the listener goes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        accept_loop.abort();
        match result {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(timeout.as_secs())),
        }
    }
}

async fn serve<S>(mut s: S, path: &str, tx: tokio::sync::mpsc::Sender<Hit>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            let _ = respond(&mut s, 431, "Request header too large.").await;
            return;
        }
    }
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default())
        .trim_end()
        .to_string();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        let _ = respond(&mut s, 405, "Method not allowed.").await;
        return;
    }
    let (req_path, query) = target.split_once('?').unwrap_or((target, ""));
    if req_path != path {
        let _ = respond(&mut s, 404, "Not found.").await;
        return;
    }
    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
    if tx
        .send(Hit {
            query: query.to_string(),
            reply: reply_tx,
        })
        .await
        .is_err()
    {
        let _ = respond(&mut s, 410, "This sign-in is no longer waiting.").await;
        return;
    }
    match reply_rx.await {
        Ok(true) => {
            let _ = respond(
                &mut s,
                200,
                "Signed in. You can close this window and return to the terminal.",
            )
            .await;
        }
        _ => {
            let _ = respond(
                &mut s,
                400,
                "The sign-in did not complete; see the terminal for the reason.",
            )
            .await;
        }
    }
}

async fn respond<S>(s: &mut S, status: u16, text: &str) -> std::io::Result<()>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        _ => "Request Header Fields Too Large",
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Bluegate</title></head><body><p>{text}</p></body></html>"
    );
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nContent-Security-Policy: default-src 'none'\r\n\
         X-Frame-Options: DENY\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(scope: &str) -> PendingAuthorization {
        PendingAuthorization::new(&AuthorizationRequest {
            authorization_endpoint: "https://as.example/authorize?tenant=1",
            client_id: "c1",
            redirect_uri: "http://127.0.0.1:7777/",
            scope,
            fhir_base: "https://as.example/fhir",
        })
        .unwrap()
    }

    fn q(url: &str, k: &str) -> Option<String> {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    }

    #[test]
    fn the_authorization_url_carries_state_pkce_aud_and_nonce() {
        let p = pending("openid launch/patient");
        let u = p.url();
        assert_eq!(q(u, "tenant").as_deref(), Some("1"));
        assert_eq!(q(u, "response_type").as_deref(), Some("code"));
        assert_eq!(q(u, "aud").as_deref(), Some("https://as.example/fhir"));
        assert_eq!(q(u, "code_challenge_method").as_deref(), Some("S256"));
        let state = q(u, "state").unwrap();
        assert!(state.len() >= 22, "state must carry at least 128 bits");
        assert_eq!(
            q(u, "code_challenge").unwrap(),
            bluegate_core::authorize::s256(p.code_verifier().expose())
        );
        assert!(bluegate_core::authorize::is_valid_verifier(
            p.code_verifier().expose()
        ));
        assert_eq!(q(u, "nonce").as_deref(), p.nonce().map(Secret::expose));
        assert!(q(&pending("launch/patient").url, "nonce").is_none());
        assert_ne!(q(&pending("openid").url, "state").unwrap(), state);
    }

    #[test]
    fn redirects_are_checked_for_state_first() {
        let p = pending("openid");
        let state = q(p.url(), "state").unwrap();
        let ok = format!("code=abc&state={state}");
        assert_eq!(p.callback(&ok).unwrap(), "abc");
        assert!(matches!(
            p.callback("code=abc&state=wrong"),
            Err(Error::StateMismatch)
        ));
        assert!(matches!(p.callback("code=abc"), Err(Error::StateMismatch)));
        assert!(matches!(
            p.callback(&format!("code=abc&state={state}&state=x")),
            Err(Error::StateMismatch)
        ));
        // An error with a wrong state is a state problem, not the server's word.
        assert!(matches!(
            p.callback("error=access_denied&state=nope"),
            Err(Error::StateMismatch)
        ));
        match p.callback(&format!(
            "error=access_denied&error_description=The+member+said+no&state={state}"
        )) {
            Err(Error::Authorization { error, description }) => {
                assert_eq!(error, "access_denied");
                assert_eq!(description.as_deref(), Some("The member said no"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.callback(&format!("state={state}")),
            Err(Error::MissingCode)
        ));
        assert!(matches!(
            p.callback(&format!("code=a&code=b&state={state}")),
            Err(Error::MissingCode)
        ));
    }

    #[test]
    fn plain_http_authorization_endpoints_are_refused() {
        assert!(PendingAuthorization::new(&AuthorizationRequest {
            authorization_endpoint: "http://as.example/authorize",
            client_id: "c1",
            redirect_uri: "http://127.0.0.1:7777/",
            scope: "openid",
            fhir_base: "https://as.example/fhir",
        })
        .is_err());
    }

    #[tokio::test]
    async fn the_loopback_listener_answers_the_redirect_and_ignores_other_paths() {
        let l = LoopbackListener::bind("http://127.0.0.1:0/cb", None)
            .await
            .unwrap();
        let uri = l.redirect_uri().to_string();
        let p = PendingAuthorization::new(&AuthorizationRequest {
            authorization_endpoint: "https://as.example/authorize",
            client_id: "c1",
            redirect_uri: &uri,
            scope: "launch/patient",
            fhir_base: "https://as.example/fhir",
        })
        .unwrap();
        let state = q(p.url(), "state").unwrap();
        let base = uri.trim_end_matches("/cb").to_string();
        let browser = tokio::spawn(async move {
            let http = crate::http::client(None).unwrap();
            let fav = http
                .get(format!("{base}/favicon.ico"))
                .send()
                .await
                .unwrap();
            assert_eq!(fav.status().as_u16(), 404);
            let r = http
                .get(format!("{base}/cb?code=the-code&state={state}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        });
        let code = l.wait(&p, Duration::from_secs(10)).await.unwrap();
        assert_eq!(code, "the-code");
        browser.await.unwrap();
    }

    #[tokio::test]
    async fn the_loopback_listener_aborts_on_a_wrong_state_and_times_out() {
        let l = LoopbackListener::bind("http://127.0.0.1:0/", None)
            .await
            .unwrap();
        let uri = l.redirect_uri().to_string();
        let p = pending("openid");
        let browser = tokio::spawn(async move {
            let r = crate::http::client(None)
                .unwrap()
                .get(format!("{uri}?code=x&state=forged"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 400);
        });
        assert!(matches!(
            l.wait(&p, Duration::from_secs(10)).await,
            Err(Error::StateMismatch)
        ));
        browser.await.unwrap();
        let l = LoopbackListener::bind("http://127.0.0.1:0/", None)
            .await
            .unwrap();
        assert!(matches!(
            l.wait(&p, Duration::from_millis(200)).await,
            Err(Error::Timeout(_))
        ));
        assert!(LoopbackListener::bind("http://192.0.2.1:80/", None)
            .await
            .is_err());
        assert!(LoopbackListener::bind("https://127.0.0.1:0/", None)
            .await
            .is_err());
    }
}
