//! KAC: real `kubectl` through NOVAS and the tunnel to a Kubernetes API in
//! a private network namespace only NOVAC reaches.
//!
//! There is no Kubernetes API server package on these machines: the cluster
//! is `nova-e2e-apiserver` (tests/src/bin), a test stand-in for
//! kube-apiserver that speaks discovery, pods list/get/watch, logs -f and
//! exec over WebSocket as kubectl 1.32 expects, checks NOVAC's own bearer
//! token, and records every request's `Impersonate-*` headers.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nova_e2e::{
    bins, certs, http,
    netns::Netns,
    new_token, ports,
    procs::{clean_command, run, NovacConfig, Novas, NovasConfig, Output, Proc},
    random_hex, require_program, require_root, unique_suffix, wait_for, TestDir,
};
use serde_json::Value;

const REGISTER: Duration = Duration::from_secs(20);
const T: Duration = Duration::from_secs(60);

const POLICIES: &str = r#"
policies:
  - name: dev-pods
    roles: [dev]
    resources: [prod]
    kubernetes:
      user: "nova:{user}"
      groups: [nova-dev, nova-all]
      rules:
        - verbs: [get, list, watch]
          namespaces: [default]
          api_groups: [""]
          resources: [pods, pods/log]
        - verbs: [create]
          namespaces: [default]
          resources: [pods/exec]
"#;

struct Kac {
    dir: TestDir,
    novas: Novas,
    agent: Proc,
    api: Proc,
    _ns: Netns,
    kube_port: u16,
    record: PathBuf,
    triggers: PathBuf,
    api_token: PathBuf,
    novac_token: PathBuf,
}

impl Kac {
    fn start(label: &str) -> Self {
        require_root();
        require_program("kubectl");
        require_kubectl_with_websocket_exec();
        let dir = TestDir::new(label);
        let ns = Netns::create();

        // The cluster: the stand-in API server on the namespace's loopback.
        let tls = certs::generate(dir.path(), &["127.0.0.1"]);
        let sa_token = format!("sa-{}", random_hex(16));
        let api_token = dir.join("api-expected-token");
        let novac_token = dir.join("novac-sa-token");
        std::fs::write(&api_token, &sa_token).expect("write token");
        std::fs::write(&novac_token, &sa_token).expect("write token");
        let record = dir.join("api-requests.jsonl");
        let triggers = dir.join("triggers");
        std::fs::create_dir_all(&triggers).expect("triggers dir");
        let mut cmd = ns.command(&bins::bin("nova-e2e-apiserver"));
        cmd.arg("127.0.0.1:0")
            .arg(&tls.server_cert)
            .arg(&tls.server_key)
            .arg(&api_token)
            .arg(&record)
            .arg(&triggers);
        let mut api = Proc::spawn("apiserver", cmd, dir.path());
        let line = api.wait_stdout_line("listening:", Duration::from_secs(10));
        let api_addr: SocketAddr = line["listening:".len()..]
            .trim()
            .parse()
            .expect("api address");
        // Only reachable inside the namespace.
        for ip in [IpAddr::V4(ns.ns_ip), IpAddr::V4(Ipv4Addr::LOCALHOST)] {
            let addr = SocketAddr::new(ip, api_addr.port());
            assert!(
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
                "the host reached the API server at {addr} directly"
            );
        }
        let ca = std::fs::read(&tls.ca_cert).expect("read ca");
        let novac_kubeconfig = dir.join("novac-kubeconfig");
        std::fs::write(
            &novac_kubeconfig,
            format!(
                r#"apiVersion: v1
kind: Config
clusters:
- name: private
  cluster:
    server: https://{api_addr}
    certificate-authority-data: {ca}
users:
- name: novac
  user:
    tokenFile: {token}
contexts:
- name: private
  context: {{cluster: private, user: novac}}
current-context: private
"#,
                ca = b64(&ca),
                token = novac_token.display()
            ),
        )
        .expect("write novac kubeconfig");

        let vpc = format!("vpc-{}", unique_suffix());
        let resources = dir.join("resources.yaml");
        std::fs::write(
            &resources,
            format!(
                r#"
resources:
  - name: prod
    kind: kubernetes
    agent: {{ tags: {{ VPC: "{vpc}" }} }}
  - name: other
    kind: kubernetes
    target: "kubernetes.default.svc:443"
    agent: {{ tags: {{ VPC: "nowhere" }} }}
"#
            ),
        )
        .expect("write resources");
        let kube_port = ports::free_port();
        let mut cfg = NovasConfig::new(&dir, "novas", &new_token("agent"))
            .policies(POLICIES)
            .user("alice", &["dev"], "alice-password")
            .user("bob", &[], "bob-password")
            .env("NOVAS_RESOURCES", &resources.display().to_string())
            .env("NOVAS_KUBE_PORT", &kube_port.to_string());
        cfg.bind = "0.0.0.0".into();
        let mut novas = Novas::start(&dir, "novas", cfg);
        let kube_line = novas.proc.wait_stdout_line("kube:", Duration::from_secs(5));
        assert!(kube_line.ends_with(&format!(":{kube_port}")), "{kube_line}");

        let name = format!("kac-agent-{}", unique_suffix());
        let mut agent = NovacConfig::for_server(&novas, &name, &format!("VPC={vpc}"))
            .env("NOVAC_KUBE_CLUSTER", "prod-private")
            .env("NOVAC_KUBECONFIG", &novac_kubeconfig.display().to_string());
        agent.servers = vec![format!("{}:{}", ns.host_ip, novas.cfg.agent_port)];
        agent.netns = Some(ns.name.clone());
        let agent = agent.start(&dir, "novac");
        let entry = novas.wait_registered(&name, REGISTER);
        let caps: Vec<&str> = entry["capabilities"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(
            caps.contains(&"kubernetes") && caps.contains(&"kubernetes-cluster=prod-private"),
            "capabilities {caps:?}"
        );
        Self {
            dir,
            novas,
            agent,
            api,
            _ns: ns,
            kube_port,
            record,
            triggers,
            api_token,
            novac_token,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.novas.cfg.cli();
        cmd.args(args);
        run(cmd, T)
    }

    /// `novas kubeconfig` for `user`, written to a file; its path.
    fn kubeconfig(&self, user: &str, cluster: &str, ttl: &str) -> PathBuf {
        let out = self.cli(&[
            "kubeconfig",
            "--user",
            user,
            "--cluster",
            cluster,
            "--ttl",
            ttl,
            "--server",
            &format!("https://127.0.0.1:{}", self.kube_port),
        ]);
        assert!(out.status.success(), "novas kubeconfig: {}", out.stderr);
        assert!(out.stdout.contains("novak_"), "{}", out.stdout);
        let path = self
            .dir
            .join(&format!("kubeconfig-{user}-{}", random_hex(3)));
        std::fs::write(&path, &out.stdout).expect("write kubeconfig");
        path
    }

    fn kubectl_cmd(&self, kubeconfig: &PathBuf, args: &[&str]) -> Command {
        let mut cmd = clean_command("kubectl");
        cmd.env("HOME", self.dir.path())
            .env("KUBECONFIG", kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .arg("--request-timeout=30s")
            .args(args);
        cmd
    }

    fn kubectl(&self, kubeconfig: &PathBuf, args: &[&str]) -> Output {
        run(self.kubectl_cmd(kubeconfig, args), T)
    }

    fn kubectl_ok(&self, kubeconfig: &PathBuf, args: &[&str]) -> String {
        let out = self.kubectl(kubeconfig, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// The requests the API server saw.
    fn api_requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn trigger(&self, name: &str) {
        std::fs::write(self.triggers.join(name), "").expect("trigger");
    }

    /// Audit events through the real CLI.
    fn audit(&self, args: &[&str]) -> Vec<Value> {
        self.novas.cli_audit(args)
    }

    /// Waits (audit writes are batched) for an event matching `pred`.
    fn audit_find(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(Duration::from_secs(20), what, || {
            self.audit(&[]).into_iter().find(|e| pred(e))
        })
    }

    /// A raw HTTPS GET on the KAC port (for the exact 401 body).
    fn raw_get(&self, path: &str, token: &str) -> (u16, Value) {
        self.raw_get_with(path, token, None)
    }

    fn raw_get_with(&self, path: &str, token: &str, header: Option<&str>) -> (u16, Value) {
        let ca = self.novas.cfg.data_dir.join("tls/cert.pem");
        let out = run(
            {
                let mut c = clean_command("curl");
                c.args(["-sS", "--path-as-is", "--cacert"])
                    .arg(&ca)
                    .args(["-w", "\n%{http_code}", "-H"])
                    .arg(format!("Authorization: Bearer {token}"))
                    .arg(format!("https://127.0.0.1:{}{path}", self.kube_port));
                if let Some(h) = header {
                    c.arg("-H").arg(h);
                }
                c
            },
            T,
        );
        let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }
}

/// The test API server speaks exec over WebSocket (`v5.channel.k8s.io`),
/// which kubectl uses by default from 1.30; older ones (Debian bookworm's
/// `kubernetes-client` is 1.20) only speak SPDY there. Fails, never skips.
fn require_kubectl_with_websocket_exec() {
    let out = run(
        {
            let mut c = clean_command("kubectl");
            c.args(["version", "--client", "-o", "json"]);
            c
        },
        T,
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    let minor: u32 = v["clientVersion"]["minor"]
        .as_str()
        .unwrap_or("")
        .trim_end_matches('+')
        .parse()
        .unwrap_or(0);
    assert!(
        v["clientVersion"]["major"] == "1" && minor >= 30,
        "the KAC tests need kubectl >= 1.30 (exec over WebSocket); found {}: {}",
        v["clientVersion"]["gitVersion"],
        out.stderr
    );
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Reads a child's stdout lines on a thread, so a test can wait for each
/// line while the process keeps running.
fn line_reader(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("no line with {needle:?} arrived; lines so far: {seen:?}");
}

/// Nothing new within `d`: the stream is waiting, not finished.
fn assert_quiet(rx: &mpsc::Receiver<String>, d: Duration, not: &str, seen: &[String]) {
    if let Ok(l) = rx.recv_timeout(d) {
        assert!(
            !l.contains(not),
            "{not:?} arrived before it was produced: {seen:?} + {l}"
        );
    }
}

#[test]
fn kubectl_get_watch_logs_exec_through_the_tunnel() {
    let kac = Kac::start("kac-main");
    let alice = kac.kubeconfig("alice", "prod", "1h");

    // get pods: discovery then the Table list, through NOVAS and NOVAC.
    let pods = kac.kubectl_ok(&alice, &["get", "pods", "-n", "default"]);
    assert!(pods.contains("NAME") && pods.contains("web-1"), "{pods}");
    let pod = kac.kubectl_ok(
        &alice,
        &["get", "pod", "web-1", "-n", "default", "-o", "json"],
    );
    let v: Value = serde_json::from_str(&pod).expect("pod json");
    assert_eq!(v["spec"]["containers"][0]["name"], "app");

    // Every request reached the API server with NOVAC's own token and the
    // impersonation the policy maps alice to.
    let reqs = kac.api_requests();
    let list = reqs
        .iter()
        .find(|r| r["path"] == "/api/v1/namespaces/default/pods")
        .expect("the list reached the API server");
    assert_eq!(list["authorized"], true, "{list}");
    assert_eq!(
        list["impersonate"]["impersonate-user"],
        serde_json::json!(["nova:alice"])
    );
    assert_eq!(
        list["impersonate"]["impersonate-group"],
        serde_json::json!(["nova-dev", "nova-all"])
    );
    for r in &reqs {
        assert_eq!(
            r["impersonate"]["impersonate-user"],
            serde_json::json!(["nova:alice"]),
            "{r}"
        );
    }

    // A user cannot choose whom to impersonate: kubectl --as / --as-group
    // send Impersonate-* headers, and NOVAS drops them.
    let before = kac.api_requests().len();
    kac.kubectl_ok(
        &alice,
        &[
            "get",
            "pods",
            "-n",
            "default",
            "--as",
            "system:admin",
            "--as-group",
            "system:masters",
        ],
    );
    let after = kac.api_requests();
    assert!(after.len() > before);
    for r in &after[before..] {
        assert_eq!(
            r["impersonate"]["impersonate-user"],
            serde_json::json!(["nova:alice"]),
            "{r}"
        );
        let groups = r["impersonate"]["impersonate-group"].to_string();
        assert!(!groups.contains("system:masters"), "{r}");
        assert!(r["impersonate"].get("impersonate-uid").is_none(), "{r}");
    }

    // get -w: the first event arrives at once, the second only when the API
    // server produces it, while the watch stays open.
    let mut watch = kac
        .kubectl_cmd(&alice, &["get", "pods", "-n", "default", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let rx = line_reader(&mut watch);
    let mut seen = Vec::new();
    wait_line(&rx, "watch-a", &mut seen);
    assert_quiet(&rx, Duration::from_secs(1), "watch-b", &seen);
    kac.trigger("watch-2");
    wait_line(&rx, "watch-b", &mut seen);
    assert!(
        watch.try_wait().expect("try_wait").is_none(),
        "watch ended early: {seen:?}"
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // logs -f: the same, for a log stream.
    let mut logs = kac
        .kubectl_cmd(&alice, &["logs", "-f", "web-1", "-n", "default"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let rx = line_reader(&mut logs);
    let mut seen = Vec::new();
    wait_line(&rx, "web-1 log line 1", &mut seen);
    assert_quiet(&rx, Duration::from_secs(1), "line 2", &seen);
    kac.trigger("log-2");
    wait_line(&rx, "web-1 log line 2", &mut seen);
    assert!(
        logs.try_wait().expect("try_wait").is_none(),
        "logs -f ended early"
    );
    // The open log stream is a live session in the console's API, and an
    // administrator's terminate ends it: kubectl sees its stream cut.
    let (addr, token) = (kac.novas.http_addr(), kac.novas.admin_token());
    let id = wait_for(Duration::from_secs(10), "a live kubernetes session", || {
        let r = http::get(&addr, "/api/sessions", Some(&token)).ok()?;
        let v: Value = serde_json::from_str(&r.body).ok()?;
        v["active"].as_array()?.iter().find_map(|s| {
            (s["kind"] == "kubernetes" && s["user"] == "alice" && s["resource"] == "prod")
                .then(|| s["id"].as_str().map(str::to_string))
                .flatten()
        })
    });
    let r = http::request(
        &addr,
        "POST",
        &format!("/api/sessions/{id}/terminate"),
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    )
    .expect("terminate");
    assert_eq!(r.status, 200, "{r:?}");
    let ended = wait_for(Duration::from_secs(20), "kubectl logs -f to end", || {
        logs.try_wait().expect("try_wait")
    });
    assert!(!ended.success(), "kubectl reports the cut stream: {ended}");
    let _ = logs.wait();

    // exec over WebSocket (the upgrade passes through NOVAS and NOVAC).
    let out = kac.kubectl_ok(
        &alice,
        &["exec", "web-1", "-n", "default", "--", "echo", "hi"],
    );
    assert_eq!(out, "hi\n");
    let exec = kac
        .api_requests()
        .into_iter()
        .find(|r| r["path"] == "/api/v1/namespaces/default/pods/web-1/exec")
        .expect("exec reached the API server");
    assert_eq!(
        exec["impersonate"]["impersonate-user"],
        serde_json::json!(["nova:alice"])
    );

    // exec -i: stdin flows up through the upgrade, stdout back (`cat`).
    let mut cat = kac
        .kubectl_cmd(
            &alice,
            &["exec", "-i", "web-1", "-n", "default", "--", "cat"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec -i");
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().expect("stdin");
        stdin
            .write_all(b"typed through the tunnel\n")
            .expect("write stdin");
    } // closing stdin ends `cat`
    let done = wait_for(T, "kubectl exec -i to finish", || {
        cat.try_wait().expect("try_wait")
    });
    let mut cat_out = String::new();
    std::io::Read::read_to_string(&mut cat.stdout.take().expect("stdout"), &mut cat_out)
        .expect("read");
    assert!(done.success(), "exec -i cat: {cat_out}");
    assert_eq!(cat_out, "typed through the tunnel\n");

    // Audited: the watch with its verb, the exec with its command and 101.
    let w = kac.audit_find("the watch in the audit", |e| {
        e["event"]["type"] == "kube_request" && e["event"]["verb"] == "watch"
    });
    assert_eq!(w["user"], "alice");
    assert_eq!(w["resource"], "prod");
    assert_eq!(w["event"]["decision"], "allow");
    assert_eq!(w["event"]["policy"], "dev-pods");
    assert_eq!(w["event"]["kube_user"], "nova:alice");
    assert_eq!(w["event"]["namespace"], "default");
    assert!(w["event"]["bytes_down"].as_u64().unwrap_or(0) > 0, "{w}");
    let x = kac.audit_find("the exec in the audit", |e| {
        e["event"]["type"] == "kube_request"
            && e["event"]["subresource"] == "exec"
            && e["event"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("command=echo"))
    });
    assert_eq!(x["event"]["status"], 101, "{x}");
    assert_eq!(x["event"]["verb"], "create");
    assert!(
        x["event"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("command=echo"),
        "{x}"
    );
    // The exec session is recorded like an SSH session (asciicast v2).
    let id = x["event"]["recording"]
        .as_str()
        .expect("exec recording id")
        .to_string();
    let cast = std::fs::read_to_string(
        kac.novas
            .cfg
            .data_dir
            .join("recordings")
            .join(format!("{id}.cast")),
    )
    .expect("read the exec recording");
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap_or("")).expect("cast header");
    assert_eq!(header["command"], "echo hi", "{cast}");
    assert!(
        lines.any(|l| l.contains("\"o\"") && l.contains("hi\\n")),
        "no output event with hi: {cast}"
    );
    // The cat session's recording has the input as typed.
    let cat_rec = kac.audit_find("the exec -i in the audit", |e| {
        e["event"]["type"] == "kube_request"
            && e["event"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("command=cat"))
    });
    let cat_id = cat_rec["event"]["recording"]
        .as_str()
        .expect("recording id");
    let cat_cast = std::fs::read_to_string(
        kac.novas
            .cfg
            .data_dir
            .join("recordings")
            .join(format!("{cat_id}.cast")),
    )
    .expect("read the exec -i recording");
    assert!(
        cat_cast
            .lines()
            .any(|l| l.contains("\"i\"") && l.contains("typed through the tunnel")),
        "{cat_cast}"
    );
    let listed = kac.cli(&["recordings", "list"]);
    assert!(listed.stdout.contains(&id), "{}", listed.stdout);
    let table = kac.cli(&["audit", "--kind", "kube_request", "--user", "alice"]);
    assert!(
        table.status.success() && table.stdout.contains("kube/watch"),
        "{}",
        table.stdout
    );

    // The agent re-reads its token file: rotate the service-account token
    // on both sides and the next request still works.
    let rotated = format!("sa-rotated-{}", random_hex(8));
    std::fs::write(&kac.api_token, &rotated).expect("rotate");
    std::fs::write(&kac.novac_token, &rotated).expect("rotate");
    let pods = kac.kubectl_ok(&alice, &["get", "pods", "-n", "default"]);
    assert!(pods.contains("web-1"), "{pods}");
}

#[test]
fn denied_requests_are_forbidden_with_the_policy_name_and_audited() {
    let kac = Kac::start("kac-deny");
    let alice = kac.kubeconfig("alice", "prod", "1h");
    let before = kac.api_requests().len();

    // A namespace outside the policy.
    let out = kac.kubectl(&alice, &["get", "pods", "-n", "kube-system"]);
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(
        out.stderr.contains("Forbidden") || out.stderr.contains("forbidden"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("denied by policy \"dev-pods\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("kube-system"), "{}", out.stderr);

    // A verb outside the policy.
    let out = kac.kubectl(&alice, &["delete", "pod", "web-1", "-n", "default"]);
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stderr.contains("cannot delete"), "{}", out.stderr);
    assert!(
        out.stderr.contains("denied by policy \"dev-pods\""),
        "{}",
        out.stderr
    );

    // Neither reached the cluster.
    let after = kac.api_requests();
    assert!(
        !after[before..].iter().any(|r| r["path"]
            .as_str()
            .is_some_and(|p| p.contains("kube-system")
                || p.ends_with("/pods/web-1") && r["method"] == "DELETE")),
        "a denied request reached the API server: {:?}",
        &after[before..]
    );

    let d = kac.audit_find("the denied delete in the audit", |e| {
        e["event"]["type"] == "kube_request" && e["event"]["verb"] == "delete"
    });
    assert_eq!(d["event"]["decision"], "deny");
    assert_eq!(d["event"]["policy"], "dev-pods");
    assert_eq!(d["event"]["status"], 403);
    assert_eq!(d["event"]["name"], "web-1");
    let n = kac.audit_find("the denied namespace in the audit", |e| {
        e["event"]["type"] == "kube_request" && e["event"]["namespace"] == "kube-system"
    });
    assert_eq!(n["event"]["decision"], "deny");

    // A user no policy names for the cluster.
    let bob = kac.kubeconfig("bob", "prod", "1h");
    let out = kac.kubectl(&bob, &["get", "pods", "-n", "default"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no policy grants user \"bob\""),
        "{}",
        out.stderr
    );

    // The API server is down: NOVAC says so, naming the cluster.
    let mut kac = kac;
    kac.api.kill();
    let out = kac.kubectl(&alice, &["get", "pods", "-n", "default"]);
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("NOVAC cannot reach the API server of cluster prod-private"),
        "{}",
        out.stderr
    );

    // The agent is gone: a clear error, not a hang.
    kac.agent.kill();
    let out = kac.kubectl(&alice, &["get", "pods", "-n", "default"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("cannot reach cluster"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_expired_and_misbound_tokens_get_401() {
    let kac = Kac::start("kac-auth");
    require_program("curl");
    let base = "/clusters/prod/api/v1/namespaces/default/pods";

    // Unknown token: kubectl fails as unauthenticated; the body says why.
    let good = kac.kubeconfig("alice", "prod", "1h");
    let text = std::fs::read_to_string(&good).expect("read");
    let forged = kac.dir.join("kubeconfig-forged");
    let token = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token line")
        .trim()
        .to_string();
    std::fs::write(&forged, text.replace(&token, "novak_0000")).expect("write");
    let out = kac.kubectl(&forged, &["get", "pods", "-n", "default"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("Unauthorized")
            || out.stderr.contains("logged in")
            || out.stderr.contains("credentials"),
        "{}",
        out.stderr
    );
    let (code, body) = kac.raw_get(base, "novak_0000");
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("not one NOVAS issued"),
        "{body}"
    );
    let (code, body) = kac.raw_get(base, "");
    assert_eq!(code, 401, "{body}");

    // Expired.
    let short = kac.kubeconfig("alice", "prod", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    let out = kac.kubectl(&short, &["get", "pods", "-n", "default"]);
    assert!(!out.status.success(), "{}", out.stdout);
    let short_token = std::fs::read_to_string(&short)
        .expect("read")
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("token: ")
                .map(|t| t.trim().to_string())
        })
        .expect("token");
    let (code, body) = kac.raw_get(base, &short_token);
    assert_eq!(code, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("expired"),
        "{body}"
    );

    // An unknown cluster is not confirmed to a client without a token.
    let (code, body) = kac.raw_get("/clusters/nope/api", "");
    assert_eq!(code, 401, "{body}");

    // A token for one cluster does not open another.
    let (code, body) = kac.raw_get("/clusters/other/api/v1/namespaces/default/pods", &token);
    assert_eq!(code, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("issued for cluster \"prod\""),
        "{body}"
    );
    // The valid one works, and nothing above reached the cluster as alice
    // but the valid request.
    let (code, body) = kac.raw_get(base, &token);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "PodList", "{body}");

    // A path that would decode into another namespace is refused, and
    // nothing of it reaches the cluster.
    let sneaky = "/clusters/prod/api/v1/namespaces/default/pods/..%2F..%2Fkube-system/pods";
    let (code, body) = kac.raw_get(sneaky, &token);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("refused request path"),
        "{body}"
    );
    let (code, body) = kac.raw_get(
        "/clusters/prod/api/v1/namespaces/default/pods/../../kube-system/pods",
        &token,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        !kac.api_requests()
            .iter()
            .any(|r| r["path"].as_str().unwrap_or("").contains("kube-system")),
        "a refused path reached the API server"
    );

    // An oversized request head is refused before anything else.
    let big = format!("X-Big: {}", "a".repeat(70_000));
    let (code, _) = kac.raw_get_with(base, &token, Some(&big));
    assert_eq!(code, 431);

    // Revoked tokens stop working at once.
    let out = kac.cli(&["kubeconfig", "--user", "alice", "--revoke"]);
    assert!(out.status.success(), "{}", out.stderr);
    let (code, body) = kac.raw_get(base, &token);
    assert_eq!(code, 401, "{body}");
    let f = kac.audit_find("the failed token in the audit", |e| {
        e["event"]["type"] == "login_failure" && e["resource"] == "prod"
    });
    assert_eq!(f["resource_kind"], "kubernetes");
}
