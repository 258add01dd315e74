//! JSON logs on request: with NOVAS_LOG_FORMAT=json and NOVAC_LOG_FORMAT=json
//! every stderr line of both programs is one JSON object with a timestamp,
//! a level and fields, the registration is logged with the agent's name,
//! and neither the enrollment token nor the admin token appears.

use std::time::Duration;

use nova_e2e::{
    new_token,
    procs::{NovacConfig, Novas, NovasConfig},
    unique_suffix, TestDir,
};
use serde_json::Value;

/// Parses every line; panics on one that is not a JSON log record.
fn records(label: &str, stderr: &str) -> Vec<Value> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{label} logged nothing");
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{label}: not a JSON line ({e}): {l:?}"));
            for key in ["timestamp", "level", "fields"] {
                assert!(v.get(key).is_some(), "{label}: no {key:?} in {l}");
            }
            v
        })
        .collect()
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or_default()
}

#[test]
fn both_programs_log_json_on_request() {
    let dir = TestDir::new("json-logs");
    let token = new_token("agent");
    let cfg = NovasConfig::new(&dir, "novas", &token).env("NOVAS_LOG_FORMAT", "json");
    let admin = cfg.admin_token.clone().unwrap_or_default();
    let mut novas = Novas::start(&dir, "novas", cfg);
    let name = format!("json-agent-{}", unique_suffix());
    let mut agent = NovacConfig::for_server(&novas, &name, "App=json")
        .env("NOVAC_LOG_FORMAT", "json")
        .start(&dir, "novac");
    novas.wait_registered(&name, Duration::from_secs(20));
    novas
        .proc
        .wait_stderr_all(&["agent registered", &name], Duration::from_secs(10));
    agent.wait_stderr_all(&["\"registered\""], Duration::from_secs(10));

    let server = records("novas", &novas.proc.stderr());
    let reg = server
        .iter()
        .find(|v| message(v) == "agent registered")
        .expect("a registration record");
    assert_eq!(reg["fields"]["agent.name"], name.as_str(), "{reg}");
    assert!(server.iter().any(|v| message(v) == "novas ready"));
    let client = records("novac", &agent.stderr());
    assert!(client.iter().any(|v| message(v) == "registered"));
    for (label, text) in [("novas", novas.proc.stderr()), ("novac", agent.stderr())] {
        assert!(
            !text.contains(&token),
            "{label} logged the enrollment token"
        );
        assert!(!text.contains(&admin), "{label} logged the admin token");
    }
}
