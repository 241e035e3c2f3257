//! Server-rendered HTML pages of the member-facing flow: sign-in, patient picker, consent, errors and the
//! account page listing connected apps.
//!
//! Pure rendering: plain structs in, a `String` of HTML out; no axum, no store. Templates live in
//! `crates/bluegate-server/templates/` and are compiled by askama at build time; every interpolated value is
//! HTML-escaped by askama (only the fixed stylesheet is inserted verbatim).
//!
//! Form contract (DESIGN.md §2 "Contract: HTML forms"): every form is a plain `method="post"` form that works
//! without JavaScript and carries the hidden `csrf` token. The pages contain no scripts at all and need only
//! this CSP (see [`CSP_DIRECTIVES`]): `default-src 'none'; style-src 'unsafe-inline'` (or the hash from
//! [`style_src`]), `img-src https:` (app logos), `form-action 'self'` plus wherever the consent redirect may
//! go, `frame-ancestors 'none'`, `base-uri 'none'`.

mod scopes;

use askama::Template;

pub use scopes::describe_scope;

/// The CSP directives these pages need (the caller adds the `form-action` targets its redirects reach,
/// e.g. `https:` and loopback origins, since browsers apply `form-action` to the redirect after a POST).
pub const CSP_DIRECTIVES: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The one stylesheet shared by all pages, inlined in a `<style>` element by the base template.
const CSS: &str = include_str!("../../templates/style.css");

/// A CSP source expression (`'sha256-…'`) that allows exactly the pages' inline stylesheet, for a
/// `style-src` stricter than `'unsafe-inline'`. The pages use no `style` attributes, so the hash suffices.
pub fn style_src() -> String {
    use base64::Engine as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, CSS.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

/// Sign-in page (`POST action` with `username`, `password`, `txn`, `csrf`).
pub struct LoginPage<'a> {
    pub app_name: &'a str,
    pub txn: &'a str,
    pub csrf: &'a str,
    pub action: &'a str,
    /// Shown above the form with `role="alert"`, e.g. "Wrong username or password."
    pub error: Option<&'a str>,
    /// Pre-filled username (after a failed attempt).
    pub username: &'a str,
}

/// One patient the member may act for.
pub struct PatientChoice<'a> {
    pub id: &'a str,
    /// The patient's name, or the id when there is no name.
    pub label: &'a str,
}

/// Patient picker (`POST action` with radio `patient`, `txn`, `csrf`).
pub struct PickerPage<'a> {
    pub app_name: &'a str,
    pub txn: &'a str,
    pub csrf: &'a str,
    pub action: &'a str,
    pub patients: &'a [PatientChoice<'a>],
}

/// A scope with its plain-language description (see [`describe_scope`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeItem<'a> {
    /// The exact scope string as requested or granted.
    pub scope: &'a str,
    pub title: String,
    pub detail: String,
    pub group: String,
}

/// Consent page (`POST action` with checkboxes `scope`, `decision` = `allow`|`deny`, `txn`, `csrf`,
/// and `patient` when set).
pub struct ConsentPage<'a> {
    pub app_name: &'a str,
    /// Shown only when it is an `https:` URL.
    pub logo_uri: Option<&'a str>,
    /// The app's contacts from its registration; `mailto:` is shown as plain text.
    pub contacts: &'a [String],
    pub client_id: &'a str,
    /// Whose records are being shared (name or id).
    pub patient_label: Option<&'a str>,
    pub scopes: &'a [ScopeItem<'a>],
    pub txn: &'a str,
    pub csrf: &'a str,
    pub action: &'a str,
    /// Hidden `patient` field value.
    pub patient: Option<&'a str>,
}

/// A stand-alone error page (never redirects anywhere).
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
}

/// The member's account page: the apps they allowed, each with a revoke form, and a sign-out form.
pub struct AppsPage<'a> {
    pub username: &'a str,
    pub apps: &'a [AppGrant<'a>],
    pub csrf: &'a str,
    /// `POST` target of each app's form (`grant_id`, `csrf`).
    pub revoke_action: &'a str,
    /// `POST` target of the sign-out form (`csrf`).
    pub logout_action: &'a str,
    /// A status line such as "Access for Example App was revoked."
    pub notice: Option<&'a str>,
}

/// One app the member allowed.
pub struct AppGrant<'a> {
    pub grant_id: &'a str,
    pub app_name: &'a str,
    pub patient_label: &'a str,
    pub scopes: Vec<ScopeItem<'a>>,
    pub granted_at: String,
}

// ---- templates -------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTpl<'p, 'a> {
    css: &'static str,
    p: &'p LoginPage<'a>,
}

#[derive(Template)]
#[template(path = "picker.html")]
struct PickerTpl<'p, 'a> {
    css: &'static str,
    p: &'p PickerPage<'a>,
}

/// Consent scopes of one group, with page-wide indexes for unique element ids.
struct ScopeGroup<'p, 'a> {
    name: &'p str,
    id: usize,
    items: Vec<Row<'p, 'a>>,
}

struct Row<'p, 'a> {
    idx: usize,
    item: &'p ScopeItem<'a>,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentTpl<'p, 'a> {
    css: &'static str,
    p: &'p ConsentPage<'a>,
    logo: Option<&'a str>,
    contacts: Vec<&'p str>,
    groups: Vec<ScopeGroup<'p, 'a>>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTpl<'p, 'a> {
    css: &'static str,
    p: &'p ErrorPage<'a>,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsTpl<'p, 'a> {
    css: &'static str,
    p: &'p AppsPage<'a>,
}

/// Renders a template; a formatting failure (not expected: the templates only write strings) yields a
/// minimal static page rather than a panic.
fn render(t: &impl Template) -> String {
    t.render().unwrap_or_else(|_| {
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error</title></head>\
         <body><h1>Something went wrong</h1><p role=\"alert\">Please try again.</p></body></html>"
            .to_owned()
    })
}

pub fn login(p: &LoginPage) -> String {
    render(&LoginTpl { css: CSS, p })
}

pub fn picker(p: &PickerPage) -> String {
    render(&PickerTpl { css: CSS, p })
}

pub fn consent(p: &ConsentPage) -> String {
    let mut groups: Vec<ScopeGroup> = Vec::new();
    for (idx, item) in p.scopes.iter().enumerate() {
        match groups.iter_mut().find(|g| g.name == item.group) {
            Some(g) => g.items.push(Row { idx, item }),
            None => groups.push(ScopeGroup {
                name: &item.group,
                id: 0,
                items: vec![Row { idx, item }],
            }),
        }
    }
    groups.sort_by_key(|g| scopes::group_rank(g.name)); // stable: unknown groups keep request order
    for (i, g) in groups.iter_mut().enumerate() {
        g.id = i;
    }
    render(&ConsentTpl {
        css: CSS,
        p,
        logo: p.logo_uri.filter(|u| is_https_url(u)),
        contacts: p
            .contacts
            .iter()
            .map(|c| contact_text(c))
            .filter(|c| !c.is_empty())
            .collect(),
        groups,
    })
}

pub fn error(p: &ErrorPage) -> String {
    render(&ErrorTpl { css: CSS, p })
}

pub fn apps(p: &AppsPage) -> String {
    render(&AppsTpl { css: CSS, p })
}

/// Logos are shown only from absolute `https:` URLs (no `http:`, `data:`, `javascript:`, relative URLs).
fn is_https_url(u: &str) -> bool {
    u.get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
        && url::Url::parse(u).is_ok_and(|url| url.scheme() == "https" && url.host().is_some())
}

/// A contact as plain text: `mailto:` is dropped so only the address is shown.
fn contact_text(c: &str) -> &str {
    let c = c.trim();
    match c.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("mailto:") => {
            // Just the address: no `?subject=` or other parameters.
            c[7..].split('?').next().unwrap_or_default().trim()
        }
        _ => c,
    }
}

#[cfg(test)]
mod tests;
