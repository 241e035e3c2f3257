use super::*;

const EVIL: &str = "\"><script>alert(1)</script>";
/// askama's HTML escaping: numeric character references.
const EVIL_ESCAPED: &str = "&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;";

fn esc(s: &str) -> String {
    s.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The opening tags (`<input …>`, `<button …>`) whose text contains every one of `needles`.
fn tags_with<'h>(html: &'h str, tag: &str, needles: &[&str]) -> Vec<&'h str> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start..];
        let end = after.find('>').map_or(after.len(), |e| e + 1);
        let t = &after[..end];
        if needles.iter().all(|n| t.contains(n)) {
            out.push(t);
        }
        rest = &after[end..];
    }
    out
}

/// Checks shared by every page: document basics, no scripts, nothing unescaped.
fn common(html: &str) {
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("<meta name=\"viewport\""));
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert_eq!(count(html, "<h1"), 1, "exactly one h1");
    assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
    assert!(!html.contains(EVIL), "raw hostile string in {html}");
    assert!(
        !html.contains(" style="),
        "no style attributes (the CSP hash covers only the <style> block)"
    );
    // No event-handler attributes in any tag (text outside tags may say "only", "once", ...).
    for tag in html
        .split('<')
        .skip(1)
        .map(|t| t.split('>').next().unwrap_or_default())
    {
        assert!(
            !tag.split_whitespace()
                .skip(1)
                .any(|a| a.to_ascii_lowercase().starts_with("on") && a.contains('=')),
            "event handler in <{tag}>"
        );
    }
    assert_eq!(count(html, "<style>"), 1);
    assert!(html.contains(":focus-visible"), "visible focus styles");
    // Every form posts, and carries the CSRF token.
    assert_eq!(count(html, "<form "), count(html, "<form method=\"post\""));
    for form in html.split("<form ").skip(1) {
        let form = &form[..form.find("</form>").expect("closed form")];
        assert!(
            form.contains("type=\"hidden\" name=\"csrf\""),
            "form without csrf: {form}"
        );
    }
    // Every visible input has a label.
    for input in tags_with(html, "input", &[]) {
        if input.contains("type=\"hidden\"") {
            continue;
        }
        let id = input
            .split("id=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("input without id: {input}"));
        assert!(
            html.contains(&format!("<label for=\"{id}\"")),
            "no label for {id}"
        );
    }
}

fn login_page(error: Option<&str>, username: &str, app: &str) -> String {
    login(&LoginPage {
        app_name: app,
        txn: "tx\"n<1>",
        csrf: "cs&rf",
        action: "/oauth/login",
        error,
        username,
    })
}

#[test]
fn login_contract() {
    let html = login_page(None, "", "Example App");
    common(&html);
    assert!(html.contains("<form method=\"post\" action=\"/oauth/login\">"));
    assert_eq!(tags_with(&html, "input", &["name=\"username\""]).len(), 1);
    let pw = tags_with(&html, "input", &["name=\"password\""]);
    assert_eq!(pw.len(), 1);
    assert!(pw[0].contains("type=\"password\""));
    assert_eq!(
        count(&html, "type=\"submit\""),
        1,
        "exactly one submit button"
    );
    assert!(html.contains("<input type=\"hidden\" name=\"txn\" value=\"tx&#34;n&#60;1&#62;\">"));
    assert!(html.contains("<input type=\"hidden\" name=\"csrf\" value=\"cs&#38;rf\">"));
    assert!(html.contains("<label for=\"username\">"));
    assert!(html.contains("<label for=\"password\">"));
    assert!(!html.contains("role=\"alert\""), "no error, no alert");
    assert!(html.contains("Example App"));
}

#[test]
fn login_error_and_escaping() {
    let html = login_page(Some(EVIL), EVIL, EVIL);
    common(&html);
    assert!(html.contains(&format!(
        "<p class=\"alert\" role=\"alert\" id=\"login-error\">{EVIL_ESCAPED}</p>"
    )));
    assert!(
        html.contains(&format!("value=\"{EVIL_ESCAPED}\"")),
        "username escaped in its attribute"
    );
    assert!(
        html.contains(&format!("<strong>{EVIL_ESCAPED}</strong>")),
        "app name escaped"
    );
    assert_eq!(count(&html, "type=\"submit\""), 1);
}

#[test]
fn picker_contract() {
    let choices = [
        PatientChoice {
            id: "p-1",
            label: "Alex Doe",
        },
        PatientChoice {
            id: "p-2",
            label: EVIL,
        },
        PatientChoice {
            id: EVIL,
            label: "Third",
        },
    ];
    let html = picker(&PickerPage {
        app_name: EVIL,
        txn: "t",
        csrf: "c",
        action: "/oauth/patient",
        patients: &choices,
    });
    common(&html);
    let radios = tags_with(&html, "input", &["type=\"radio\"", "name=\"patient\""]);
    assert_eq!(radios.len(), 3);
    assert!(radios[0].contains("value=\"p-1\"") && radios[0].contains(" checked"));
    assert!(radios[1].contains("value=\"p-2\"") && !radios[1].contains(" checked"));
    assert!(radios[2].contains(&format!("value=\"{EVIL_ESCAPED}\"")));
    assert_eq!(count(&html, " checked"), 1);
    assert!(html.contains("<fieldset>") && html.contains("<legend>"));
    assert!(html.contains("<label for=\"patient-1\">"));
    assert!(html.contains(&format!("<label for=\"patient-1\">{EVIL_ESCAPED}</label>")));
    assert!(html.contains("<input type=\"hidden\" name=\"txn\" value=\"t\">"));
    assert!(html.contains("<form method=\"post\" action=\"/oauth/patient\">"));
    assert_eq!(count(&html, "type=\"submit\""), 1);
}

const REQUEST: &str = "launch/patient openid fhirUser offline_access patient/ExplanationOfBenefit.read \
    patient/Coverage.read patient/Patient.read patient/Organization.read patient/Practitioner.read \
    patient/ExplanationOfBenefit.rs?type=http://terminology.hl7.org/CodeSystem/claim-type|pharmacy patient/*.rs";

fn consent_page(
    logo: Option<&str>,
    patient: Option<&str>,
    scopes: &[ScopeItem],
    contacts: &[String],
    app: &str,
) -> String {
    consent(&ConsentPage {
        app_name: app,
        logo_uri: logo,
        contacts,
        client_id: "client-123",
        patient_label: patient,
        scopes,
        txn: "txn\"1",
        csrf: "csrf<2>",
        action: "/oauth/consent",
        patient,
    })
}

#[test]
fn consent_contract() {
    let items: Vec<ScopeItem> = REQUEST.split_whitespace().map(describe_scope).collect();
    let contacts = vec![
        "mailto:help@example.org".to_owned(),
        "https://example.org/support".to_owned(),
    ];
    let html = consent_page(
        Some("https://example.org/logo.png"),
        Some("pat-1"),
        &items,
        &contacts,
        "Example App",
    );
    common(&html);
    assert!(html.contains("<form method=\"post\" action=\"/oauth/consent\">"));
    let boxes = tags_with(&html, "input", &["type=\"checkbox\"", "name=\"scope\""]);
    assert_eq!(boxes.len(), items.len());
    assert_eq!(count(&html, "name=\"scope\""), items.len());
    for item in &items {
        let value = esc(item.scope);
        let matching: Vec<_> = boxes
            .iter()
            .filter(|b| b.contains(&format!("value=\"{value}\"")))
            .collect();
        assert_eq!(matching.len(), 1, "checkbox for {}", item.scope);
        assert!(
            matching[0].contains(" checked"),
            "{} checked by default",
            item.scope
        );
        assert!(html.contains(&esc(&item.title)), "{}", item.title);
        assert!(html.contains(&esc(&item.detail)), "{}", item.detail);
    }
    assert_eq!(
        tags_with(
            &html,
            "button",
            &["type=\"submit\"", "name=\"decision\"", "value=\"allow\""]
        )
        .len(),
        1
    );
    assert_eq!(
        tags_with(
            &html,
            "button",
            &["type=\"submit\"", "name=\"decision\"", "value=\"deny\""]
        )
        .len(),
        1
    );
    assert_eq!(count(&html, "type=\"submit\""), 2);
    // Allow comes first, so pressing Enter allows (the browser's default button).
    assert!(html.find("value=\"allow\"") < html.find("value=\"deny\""));
    assert!(html.contains("<input type=\"hidden\" name=\"txn\" value=\"txn&#34;1\">"));
    assert!(html.contains("<input type=\"hidden\" name=\"csrf\" value=\"csrf&#60;2&#62;\">"));
    assert!(html.contains("<input type=\"hidden\" name=\"patient\" value=\"pat-1\">"));
    assert!(html.contains("<img src=\"https://example.org/logo.png\""));
    assert!(html.contains("help@example.org"));
    assert!(
        !html.contains("mailto:"),
        "mailto shown as text, not a link"
    );
    assert!(!html.contains("<a "), "contacts are text, never links");
    assert!(html.contains("https://example.org/support"));
    assert!(html.contains("client-123"));
    assert!(html.contains("revoke"), "says access can be revoked later");
    assert!(html.contains("account page"));
    assert!(
        html.contains("added later"),
        "the * scope warns about future data types"
    );
    assert!(html.contains("pharmacy claims only"));
    assert!(html.contains("<legend>Claims and explanations of benefit</legend>"));
    assert!(html.contains("<legend>Staying connected</legend>"));
    assert!(html.contains("<legend>Your identity</legend>"));
    // Groups appear once each, data before identity.
    assert_eq!(
        count(&html, "<legend>Claims and explanations of benefit</legend>"),
        1
    );
    assert!(html.find("<legend>Claims and") < html.find("<legend>Your identity</legend>"));
    // Ids are unique.
    for i in 0..items.len() {
        assert_eq!(count(&html, &format!("id=\"scope-{i}\"")), 1);
    }
}

#[test]
fn consent_without_patient_or_logo() {
    let items = vec![describe_scope("openid"), describe_scope("fhirUser")];
    let html = consent_page(None, None, &items, &[], "App");
    common(&html);
    assert!(!html.contains("name=\"patient\""));
    assert!(!html.contains("<img"));
    assert!(!html.contains("App contact"));
    assert_eq!(count(&html, "name=\"scope\""), 2);
}

#[test]
fn consent_logo_only_over_https() {
    let items = vec![describe_scope("openid")];
    for bad in [
        "http://example.org/logo.png",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:image/png;base64,AAAA",
        "//example.org/logo.png",
        "/logo.png",
        "https:logo.png",
        "",
    ] {
        let html = consent_page(Some(bad), None, &items, &[], "App");
        assert!(!html.contains("<img"), "logo {bad:?} must be omitted");
    }
    let html = consent_page(
        Some("HTTPS://example.org/l.png?a=1&b=\"2\""),
        None,
        &items,
        &[],
        "App",
    );
    assert!(
        html.contains("<img src=\"HTTPS://example.org/l.png?a=1&#38;b=&#34;2&#34;\""),
        "{html}"
    );
}

#[test]
fn consent_escapes_hostile_strings() {
    let evil_scope = format!("patient/Coverage.rs?x={EVIL}");
    let items = vec![describe_scope(&evil_scope), describe_scope(EVIL)];
    let contacts = vec![EVIL.to_owned(), format!("mailto:{EVIL}")];
    let html = consent(&ConsentPage {
        app_name: EVIL,
        logo_uri: Some(&format!("https://example.org/{EVIL}")),
        contacts: &contacts,
        client_id: EVIL,
        patient_label: Some(EVIL),
        scopes: &items,
        txn: EVIL,
        csrf: EVIL,
        action: "/oauth/consent",
        patient: Some(EVIL),
    });
    common(&html);
    assert!(html.contains(&format!(
        "<input type=\"hidden\" name=\"patient\" value=\"{EVIL_ESCAPED}\">"
    )));
    assert!(html.contains(&format!(
        "<input type=\"hidden\" name=\"txn\" value=\"{EVIL_ESCAPED}\">"
    )));
    assert!(html.contains(&format!("App contact: {EVIL_ESCAPED}, {EVIL_ESCAPED}")));
    assert!(html.contains(&format!("value=\"{EVIL_ESCAPED}\" checked")));
    assert!(html.contains("<title>Allow &#34;&#62;&#60;script&#62;"));
    assert_eq!(count(&html, "name=\"scope\""), 2);
}

#[test]
fn error_page() {
    let html = error(&ErrorPage {
        title: "Unknown app",
        message: "This app is not registered.",
    });
    common(&html);
    assert!(html.contains("<h1>Unknown app</h1>"));
    assert!(html.contains("role=\"alert\">This app is not registered.</p>"));
    assert!(!html.contains("<form"));
    let html = error(&ErrorPage {
        title: EVIL,
        message: EVIL,
    });
    common(&html);
    assert_eq!(
        count(&html, EVIL_ESCAPED),
        3,
        "title element, h1 and message"
    );
}

#[test]
fn apps_page() {
    let grants = vec![
        AppGrant {
            grant_id: "g-1",
            app_name: "Example App",
            patient_label: "Alex Doe",
            scopes: vec![
                describe_scope("patient/ExplanationOfBenefit.read"),
                describe_scope("offline_access"),
            ],
            granted_at: "2026-05-01 10:00 UTC".to_owned(),
        },
        AppGrant {
            grant_id: EVIL,
            app_name: EVIL,
            patient_label: EVIL,
            scopes: vec![describe_scope(EVIL)],
            granted_at: EVIL.to_owned(),
        },
    ];
    let html = apps(&AppsPage {
        username: EVIL,
        apps: &grants,
        csrf: "tok&1",
        revoke_action: "/account/revoke",
        logout_action: "/account/logout",
        notice: Some("Access for Other App was revoked."),
    });
    common(&html);
    assert_eq!(
        count(&html, "<form method=\"post\" action=\"/account/revoke\">"),
        2
    );
    assert_eq!(
        count(&html, "<form method=\"post\" action=\"/account/logout\">"),
        1
    );
    assert_eq!(
        count(
            &html,
            "<input type=\"hidden\" name=\"csrf\" value=\"tok&#38;1\">"
        ),
        3
    );
    assert!(html.contains("<input type=\"hidden\" name=\"grant_id\" value=\"g-1\">"));
    assert!(html.contains(&format!(
        "<input type=\"hidden\" name=\"grant_id\" value=\"{EVIL_ESCAPED}\">"
    )));
    assert_eq!(count(&html, ">Revoke access</button>"), 2);
    assert!(html.contains(">Sign out</button>"));
    assert!(html.contains("role=\"status\">Access for Other App was revoked.</p>"));
    assert!(html.contains("See your claims"));
    assert!(html.contains("Alex Doe"));
    assert!(html.contains("2026-05-01 10:00 UTC"));
    // Headings in order: h1, then h2 per app with h3 inside, then h2.
    let h1 = html.find("<h1").expect("h1");
    assert!(html.find("<h2").is_some_and(|h2| h2 > h1));

    let empty = apps(&AppsPage {
        username: "alex",
        apps: &[],
        csrf: "c",
        revoke_action: "/account/revoke",
        logout_action: "/account/logout",
        notice: None,
    });
    common(&empty);
    assert!(!empty.contains("grant_id"));
    assert!(!empty.contains("role=\"status\""));
    assert!(empty.contains("haven't allowed any apps"));
}

#[test]
fn contact_text_drops_mailto() {
    assert_eq!(contact_text("mailto:a@b.org"), "a@b.org");
    assert_eq!(contact_text("MAILTO:a@b.org?subject=hi"), "a@b.org");
    assert_eq!(contact_text(" tel:+1-555 "), "tel:+1-555");
    assert_eq!(contact_text("ma"), "ma");
    assert_eq!(contact_text("mailtö:x"), "mailtö:x");
}

#[test]
fn style_hash_matches_the_inline_stylesheet() {
    let html = error(&ErrorPage {
        title: "t",
        message: "m",
    });
    let start = html.find("<style>").expect("style") + "<style>".len();
    let end = html.find("</style>").expect("end");
    assert_eq!(
        &html[start..end],
        CSS,
        "the page embeds exactly the hashed bytes"
    );
    let src = style_src();
    assert!(
        src.starts_with("'sha256-") && src.ends_with('\'') && src.len() == 53,
        "{src}"
    );
    assert!(CSP_DIRECTIVES.contains("frame-ancestors 'none'"));
    assert!(!CSP_DIRECTIVES.contains("script-src"));
}
