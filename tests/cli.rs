//! The command line and the configuration layers: CLI > ENV > YAML > defaults, shown by
//! `tollgate config --sources`, checked by `tollgate check`.

mod common;

use common::{run, temp_dir};

/// The `--sources` line for `key`.
fn source_line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{out}"))
}

#[test]
fn keepalive_interval_precedence_cli_over_env_over_yaml() {
    let dir = temp_dir("precedence_keepalive");
    std::fs::write(
        dir.join("config.yaml"),
        "failure_handling:\n  keepalive_interval: 5\n",
    )
    .expect("write");

    let (code, out, err) = run(&["config", "--sources"], &[], &dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        source_line(&out, "failure_handling.keepalive_interval"),
        "failure_handling.keepalive_interval: 5  # config.yaml"
    );

    let env = [("FAILURE_HANDLING_KEEPALIVE_INTERVAL", "7")];
    let (_, out, _) = run(&["config", "--sources"], &env, &dir);
    assert_eq!(
        source_line(&out, "failure_handling.keepalive_interval"),
        "failure_handling.keepalive_interval: 7  # env FAILURE_HANDLING_KEEPALIVE_INTERVAL"
    );

    // The flag wins, before or after the sub-command.
    for args in [
        &["--keepalive-interval", "3", "config", "--sources"][..],
        &["config", "--sources", "--keepalive-interval", "3"][..],
    ] {
        let (_, out, _) = run(args, &env, &dir);
        assert_eq!(
            source_line(&out, "failure_handling.keepalive_interval"),
            "failure_handling.keepalive_interval: 3  # cli"
        );
    }

    // The effective YAML agrees.
    let (_, out, _) = run(&["config", "--keepalive-interval", "3"], &env, &dir);
    let v: serde_yaml::Value = serde_yaml::from_str(&out).expect("yaml");
    assert_eq!(v["failure_handling"]["keepalive_interval"], 3);

    // With nothing set, the built-in default.
    let empty = temp_dir("precedence_keepalive_default");
    let (_, out, _) = run(&["config", "--sources"], &[], &empty);
    assert_eq!(
        source_line(&out, "failure_handling.keepalive_interval"),
        "failure_handling.keepalive_interval: 8  # default"
    );
}

#[test]
fn port_default_backend_and_force_model_precedence() {
    let dir = temp_dir("precedence_misc");
    std::fs::write(
        dir.join("config.yaml"),
        "server:\n  port: 8100\ndefault_backend: mock\nforce_model: mock:from-yaml\nbackends:\n  mock: {}\n  other: { type: mock }\n",
    )
    .expect("write");
    let (_, out, _) = run(&["config", "--sources"], &[], &dir);
    assert_eq!(
        source_line(&out, "server.port"),
        "server.port: 8100  # config.yaml"
    );
    assert_eq!(
        source_line(&out, "force_model"),
        "force_model: \"mock:from-yaml\"  # config.yaml"
    );

    let env = [
        ("TOLLGATE__SERVER__PORT", "8200"),
        ("DEFAULT_BACKEND", "other"),
        ("FORCE_MODEL", "mock:from-env"),
    ];
    let (_, out, _) = run(&["config", "--sources"], &env, &dir);
    assert_eq!(
        source_line(&out, "server.port"),
        "server.port: 8200  # env TOLLGATE__SERVER__PORT"
    );
    assert_eq!(
        source_line(&out, "default_backend"),
        "default_backend: \"other\"  # env DEFAULT_BACKEND"
    );
    assert_eq!(
        source_line(&out, "force_model"),
        "force_model: \"mock:from-env\"  # env FORCE_MODEL"
    );

    let (code, out, err) = run(
        &[
            "config",
            "--sources",
            "--port",
            "8300",
            "--default-backend",
            "mock",
            "--force-model",
            "mock:from-cli",
        ],
        &env,
        &dir,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(source_line(&out, "server.port"), "server.port: 8300  # cli");
    assert_eq!(
        source_line(&out, "default_backend"),
        "default_backend: \"mock\"  # cli"
    );
    assert_eq!(
        source_line(&out, "force_model"),
        "force_model: \"mock:from-cli\"  # cli"
    );
}

#[test]
fn secrets_print_as_stars() {
    let dir = temp_dir("secrets");
    std::fs::write(
        dir.join("config.yaml"),
        "backends:\n  o:\n    type: openai\n    api_key: sk-yaml-SECRET\n    headers: { Authorization: Bearer hdr-SECRET, X-Title: visible }\nauth:\n  keys:\n    - { name: ci, key: client-SECRET }\n",
    )
    .expect("write");
    let env = [("TOLLGATE__BACKENDS__O__API_KEY", "sk-env-SECRET")];
    for args in [&["config"][..], &["config", "--sources"][..]] {
        let (code, out, err) = run(args, &env, &dir);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains("SECRET"), "{out}");
        assert!(out.contains("***"));
        assert!(out.contains("visible"));
    }
}

#[test]
fn check_lists_every_problem_with_file_and_key_path() {
    let dir = temp_dir("check");
    std::fs::write(
        dir.join("bad.yaml"),
        "sever: {}\nfailure_handling:\n  keepalive_interval: 99\nbackends:\n  x: { type: martian }\nroutes:\n  r: [\"ghost:m\"]\n",
    )
    .expect("write");
    let (code, _, err) = run(&["check", "bad.yaml"], &[], &dir);
    assert_eq!(code, 2, "{err}");
    for want in [
        "bad.yaml: sever: unknown key `sever` (did you mean `server`?)",
        "bad.yaml: failure_handling.keepalive_interval: must be between 1 and 60",
        "bad.yaml: backends.x.type: unknown connector type `martian`",
        "bad.yaml: routes.r[0]:",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }

    std::fs::write(dir.join("syntax.yaml"), "server: [unclosed\n").expect("write");
    let (code, _, err) = run(&["check", "syntax.yaml"], &[], &dir);
    assert_eq!(code, 2);
    assert!(err.contains("syntax.yaml"), "{err}");

    let (code, out, err) = run(
        &[
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.example.yaml"),
        ],
        &[],
        &dir,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"));

    // Out-of-range from the command line is reported too, naming the flag's layer.
    let (code, _, err) = run(
        &["check", "--keepalive-interval", "0"],
        &[],
        &temp_dir("check_cli"),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("cli: failure_handling.keepalive_interval"),
        "{err}"
    );
}

#[test]
fn models_and_chat_commands_use_the_same_routing() {
    let dir = temp_dir("commands");
    std::fs::write(
        dir.join("config.yaml"),
        "backends:\n  mock: { models: [a, b], reply: \"one two three\" }\nroutes:\n  fast: [\"mock:a\"]\n",
    )
    .expect("write");
    let (code, out, err) = run(&["models"], &[], &dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["fast", "mock:a", "mock:b"]
    );
    let (code, out, err) = run(&["chat", "fast", "hello"], &[], &dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "one two three");
    let (code, _, err) = run(&["chat", "nowhere:x", "hello"], &[], &dir);
    assert_eq!(code, 1);
    assert!(err.contains("model_not_found"), "{err}");
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let dir = temp_dir("missing");
    let (code, _, err) = run(&["--config", "nope.yaml", "check"], &[], &dir);
    assert_eq!(code, 2);
    assert!(err.contains("nope.yaml"), "{err}");
}

#[test]
fn environment_text_stays_text_and_duplicate_keys_are_refused() {
    let dir = temp_dir("env_text");
    std::fs::write(
        dir.join("config.yaml"),
        "backends:\n  x: { type: openai }\n",
    )
    .expect("write");
    // An all-digit key is a string; a numeric port is still a number; lists parse.
    let env = [
        ("TOLLGATE__BACKENDS__X__API_KEY", "0012345"),
        ("TOLLGATE__SERVER__PORT", "9100"),
        ("TOLLGATE__BACKENDS__X__MODELS", r#"["a", "b"]"#),
    ];
    let (code, out, err) = run(&["check"], &env, &dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"));
    let (_, out, _) = run(&["config"], &env, &dir);
    let v: serde_yaml::Value = serde_yaml::from_str(&out).expect("yaml");
    assert_eq!(v["server"]["port"], 9100);
    assert_eq!(v["backends"]["x"]["models"][1], "b");

    std::fs::write(
        dir.join("dup.yaml"),
        "server: { port: 1 }\nserver: { port: 2 }\n",
    )
    .expect("write");
    let (code, _, err) = run(&["check", "dup.yaml"], &[], &dir);
    assert_eq!(code, 2);
    assert!(
        err.contains("dup.yaml") && err.contains("duplicate"),
        "{err}"
    );
}

#[test]
fn url_and_env_tell_clients_where_to_go() {
    let dir = temp_dir("url_env");
    std::fs::write(
        dir.join("config.yaml"),
        "server: { host: 0.0.0.0, port: 9123 }\nbackends:\n  nvidia: {}\nauth:\n  keys:\n    - { name: ci, key_env: CI_KEY }\n    - { name: hashed, key_sha256: \"0000000000000000000000000000000000000000000000000000000000000000\" }\n",
    )
    .expect("write");
    let (code, out, _) = run(&["url"], &[], &dir);
    assert_eq!((code, out.trim()), (0, "http://127.0.0.1:9123/v1"));
    let (code, out, _) = run(&["url", "--provider", "nvidia"], &[], &dir);
    assert_eq!(
        (code, out.trim()),
        (0, "http://127.0.0.1:9123/v1/providers/nvidia/-")
    );
    let (code, out, _) = run(&["url", "--model", "fast"], &[], &dir);
    assert_eq!(
        (code, out.trim()),
        (0, "http://127.0.0.1:9123/v1/models/fast/-/v1")
    );
    let (code, _, err) = run(&["url", "--provider", "ghost"], &[], &dir);
    assert_eq!(code, 2);
    assert!(err.contains("not a configured backend"), "{err}");

    let (code, out, err) = run(
        &["env", "--key", "ci"],
        &[("CI_KEY", " Bearer ci-key-1 ")],
        &dir,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "export OPENAI_BASE_URL=http://127.0.0.1:9123/v1",
            "export OPENAI_API_KEY=ci-key-1",
            "export ANTHROPIC_BASE_URL=http://127.0.0.1:9123",
            "export ANTHROPIC_AUTH_TOKEN=ci-key-1",
        ]
    );
    // Keys are needed and none is named: a clear refusal, never a made-up key.
    let (code, _, err) = run(&["env"], &[("CI_KEY", "x")], &dir);
    assert_eq!(code, 2);
    assert!(err.contains("--key"), "{err}");
    let (code, _, err) = run(&["env", "--key", "hashed"], &[("CI_KEY", "x")], &dir);
    assert_eq!(code, 2);
    assert!(err.contains("SHA-256"), "{err}");
}
