//! The command line: `pki` outputs checked with openssl, refusals, `--help` everywhere, admin commands.

mod common;

use std::process::Command;

use serde_json::Value;

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn pki_community_issue_revoke_crl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca_s = ca.to_str().unwrap();
    common::run_ok(&[
        "pki",
        "community",
        "--out",
        ca_s,
        "--name",
        "CLI Community",
        "--key",
        "p256",
    ]);
    // Refuses to overwrite without --force.
    let out = common::run(&["pki", "community", "--out", ca_s, "--name", "Again"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));

    let mut serials = Vec::new();
    for (name, key) in [("rsa-app", "rsa"), ("ec-app", "p256")] {
        let uri = format!("https://{name}.example/");
        let prefix = ca.join(name);
        let out = common::run_ok(&[
            "pki",
            "issue",
            "--ca-dir",
            ca_s,
            "--kind",
            "udap-client",
            "--uri",
            &uri,
            "--key",
            key,
            "--days",
            "10",
            "--out",
            prefix.to_str().unwrap(),
        ]);
        let printed: Value = serde_json::from_str(&out).unwrap();
        serials.push(printed["serial"].as_str().unwrap().to_string());
        let leaf = format!("{}.pem", prefix.display());
        // The chain verifies with openssl against the root, through the intermediate.
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            &format!("{ca_s}/root-ca.pem"),
            "-untrusted",
            &format!("{ca_s}/intermediate-ca.pem"),
            &leaf,
        ]);
        assert!(ok, "{name}: {text}");
        // URI SAN present; not a CA.
        let (_, text) = openssl(&[
            "x509",
            "-in",
            &leaf,
            "-noout",
            "-ext",
            "subjectAltName,basicConstraints",
        ]);
        assert!(text.contains(&format!("URI:{uri}")), "{text}");
        assert!(!text.contains("CA:TRUE"), "{text}");
        // The key file is private.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(format!("{}-key.pem", prefix.display()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others");
        }
        // The chain file is leaf then intermediate.
        let chain = std::fs::read_to_string(format!("{}-chain.pem", prefix.display())).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    }
    // Issuing into an existing prefix is refused.
    let out = common::run(&[
        "pki",
        "issue",
        "--ca-dir",
        ca_s,
        "--kind",
        "udap-client",
        "--uri",
        "https://x.example/",
        "--out",
        ca.join("rsa-app").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    // A UDAP certificate without a URI is refused.
    let out = common::run(&[
        "pki",
        "issue",
        "--ca-dir",
        ca_s,
        "--kind",
        "udap-client",
        "--out",
        ca.join("nouri").to_str().unwrap(),
    ]);
    assert!(!out.status.success());

    common::run_ok(&["pki", "revoke", "--ca-dir", ca_s, "--serial", &serials[0]]);
    let out = common::run(&["pki", "revoke", "--ca-dir", ca_s, "--serial", "deadbeef"]);
    assert!(
        !out.status.success(),
        "revoking an unknown serial succeeded"
    );
    common::run_ok(&["pki", "crl", "--ca-dir", ca_s]);
    let crl = format!("{ca_s}/intermediate-ca.crl.pem");
    let (ok, text) = openssl(&[
        "crl",
        "-in",
        &crl,
        "-noout",
        "-text",
        "-CAfile",
        &format!("{ca_s}/intermediate-ca.pem"),
    ]);
    assert!(ok, "{text}");
    let upper = text.to_uppercase();
    let revoked = serials[0].trim_start_matches('0').to_uppercase();
    let kept = serials[1].trim_start_matches('0').to_uppercase();
    assert!(
        upper.contains(&revoked),
        "CRL does not list {revoked}: {text}"
    );
    assert!(
        !upper.contains(&kept),
        "CRL lists a serial that was not revoked: {text}"
    );
    assert!(text.contains("verify OK") || ok, "{text}");
    // The revoked certificate now fails openssl's CRL check; the other passes.
    let root_and_inter = dir.path().join("bundle.pem");
    std::fs::write(
        &root_and_inter,
        format!(
            "{}{}",
            std::fs::read_to_string(format!("{ca_s}/root-ca.pem")).unwrap(),
            std::fs::read_to_string(format!("{ca_s}/intermediate-ca.pem")).unwrap()
        ),
    )
    .unwrap();
    let crls = dir.path().join("crls.pem");
    std::fs::write(
        &crls,
        format!(
            "{}{}",
            std::fs::read_to_string(format!("{ca_s}/root-ca.crl.pem")).unwrap(),
            std::fs::read_to_string(&crl).unwrap()
        ),
    )
    .unwrap();
    for (name, expect_ok) in [("rsa-app", false), ("ec-app", true)] {
        let (ok, text) = openssl(&[
            "verify",
            "-crl_check_all",
            "-CAfile",
            root_and_inter.to_str().unwrap(),
            "-CRLfile",
            crls.to_str().unwrap(),
            &format!("{ca_s}/{name}.pem"),
        ]);
        assert_eq!(ok, expect_ok, "{name}: {text}");
    }
}

#[test]
fn every_command_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["member"],
        &["member", "add"],
        &["member", "list"],
        &["client"],
        &["client", "add"],
        &["client", "list"],
        &["client", "show"],
        &["client", "disable"],
        &["client", "enable"],
        &["keys"],
        &["keys", "list"],
        &["keys", "rotate"],
        &["audit"],
        &["pki"],
        &["pki", "community"],
        &["pki", "issue"],
        &["pki", "revoke"],
        &["pki", "crl"],
        &["fhir"],
        &["fhir", "import"],
        &["app"],
        &["app", "discover"],
        &["bench"],
        &["bench", "registration"],
        &["bench", "token"],
    ];
    for cmd in commands {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let out = common::run(&args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    // Unknown subcommands and missing arguments fail with a message, not a panic.
    let out = common::run(&["frobnicate"]);
    assert!(!out.status.success());
    let out = common::run(&["member", "add"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn admin_commands_manage_members_clients_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let pki = common::make_pki(dir.path(), &format!("https://localhost:{port}/fhir"));
    let config = common::write_config(dir.path(), port, &pki, "");
    let c = config.to_str().unwrap();
    let run_stdin = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut child = Command::new(common::bin())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run_stdin(
        &[
            "member",
            "add",
            "--config",
            c,
            "--username",
            "parent",
            "--password-stdin",
            "--patient",
            "kid-1",
            "--patient",
            "kid-2",
            "--fhir-user",
            "RelatedPerson/parent-1",
        ],
        "a long enough password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_stdin(
        &[
            "member",
            "add",
            "--config",
            c,
            "--username",
            "parent",
            "--password-stdin",
            "--patient",
            "kid-1",
        ],
        "another password\n",
    );
    assert!(!out.status.success(), "duplicate username accepted");
    let out = run_stdin(
        &[
            "member",
            "add",
            "--config",
            c,
            "--username",
            "x",
            "--password-stdin",
            "--patient",
            "bad id!",
        ],
        "a long enough password\n",
    );
    assert!(!out.status.success(), "bad patient id accepted");
    let members: Value =
        serde_json::from_str(&common::run_ok(&["member", "list", "--config", c])).unwrap();
    assert_eq!(
        members[0]["patients"],
        serde_json::json!(["kid-1", "kid-2"])
    );
    assert!(
        !members.to_string().contains("argon2"),
        "password hash printed"
    );

    let out = run_stdin(
        &[
            "client",
            "add",
            "--config",
            c,
            "--name",
            "Secret App",
            "--redirect-uri",
            "https://app.example/cb",
            "--secret-stdin",
        ],
        "0123456789abcdef0123456789abcdef-secret\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = client["client_id"].as_str().unwrap().to_string();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("0123456789abcdef"),
        "secret echoed"
    );
    let out = run_stdin(
        &[
            "client",
            "add",
            "--config",
            c,
            "--name",
            "Short",
            "--redirect-uri",
            "https://app.example/cb",
            "--secret-stdin",
        ],
        "short\n",
    );
    assert!(!out.status.success(), "short secret accepted");
    let out = common::run(&[
        "client",
        "add",
        "--config",
        c,
        "--name",
        "Bad",
        "--redirect-uri",
        "http://app.example/cb",
        "--public",
    ]);
    assert!(!out.status.success(), "http redirect accepted");
    common::run_ok(&[
        "client",
        "add",
        "--config",
        c,
        "--name",
        "Native",
        "--redirect-uri",
        "http://127.0.0.1:7777/",
        "--public",
    ]);
    common::run_ok(&["client", "disable", "--config", c, &id]);
    let shown: Value =
        serde_json::from_str(&common::run_ok(&["client", "show", "--config", c, &id])).unwrap();
    assert_eq!(shown["status"], "disabled");
    common::run_ok(&["client", "enable", "--config", c, &id]);
    let list: Value =
        serde_json::from_str(&common::run_ok(&["client", "list", "--config", c])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!common::run(&["client", "show", "--config", c, "nope"])
        .status
        .success());

    // Keys: the first use creates RS256 + ES256; rotation keeps the retired key published.
    common::run_ok(&["keys", "rotate", "--config", c, "--alg", "ES256"]);
    let keys: Value =
        serde_json::from_str(&common::run_ok(&["keys", "list", "--config", c])).unwrap();
    let es: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] == "ES256")
        .collect();
    assert!(!es.is_empty());
    let audit = common::run_ok(&["audit", "--config", c, "--event", "client."]);
    assert!(
        audit.contains("client.disabled") && audit.contains("client.registered"),
        "{audit}"
    );
}
