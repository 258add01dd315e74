//! Every file under compose/ and k8s/ parses, has the shape operators rely
//! on, and sets only environment variables the binaries read: the names
//! come from `novas::config::env_names()` / `novac::config::env_names()`,
//! which are derived from the structs the binaries fill, so a misspelt
//! variable in a deployment file fails here instead of being ignored in
//! production. The k8s/ manifests are also validated strictly against the
//! Kubernetes API schemas with `kubernetes-validate`. The Dockerfile is
//! checked for its stages and what they build; it is not built: there is
//! no Docker engine on these machines.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// All YAML documents of a file.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn files_under(rel: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root().join(rel))
        .unwrap_or_else(|e| panic!("list {rel}: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .to_string()
        })
        .map(|n| format!("{rel}/{n}"))
        .collect();
    out.sort();
    out
}

fn names(list: Vec<String>) -> BTreeSet<String> {
    list.into_iter().collect()
}

fn novas_env() -> BTreeSet<String> {
    names(novas::config::env_names())
}

fn novac_env() -> BTreeSet<String> {
    names(novac::config::env_names())
}

/// `v[a][b]…`, panicking with the path when a step is missing.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for (i, k) in path.iter().enumerate() {
        cur = cur
            .get(*k)
            .unwrap_or_else(|| panic!("missing {:?} in {v:?}", &path[..=i]));
    }
    cur
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string"))
}

fn assert_known(file: &str, what: &str, set: &BTreeSet<String>, known: &BTreeSet<String>) {
    let unknown: Vec<&String> = set.difference(known).collect();
    assert!(
        unknown.is_empty(),
        "{file}: {what} sets {unknown:?}, which the binary does not read (known: {known:?})"
    );
}

// ---- compose ----------------------------------------------------------

/// A compose service's environment as name → value (map or list form).
fn compose_env(service: &Value) -> BTreeMap<String, String> {
    let Some(env) = service.get("environment") else {
        return BTreeMap::new();
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    match env {
        Value::Mapping(m) => m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Value::Sequence(s) => s
            .iter()
            .map(|e| {
                let e = scalar(e);
                let (k, v) = e.split_once('=').unwrap_or((&e, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        other => panic!("environment is neither a map nor a list: {other:?}"),
    }
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    at(doc, &["services", name])
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            other => panic!("not a string: {other:?}"),
        })
        .collect()
}

/// Our services (built from the Dockerfile) may set only the variables
/// the binary reads; other services (MariaDB) are not ours.
fn check_compose_env(file: &str, doc: &Value) {
    let services = at(doc, &["services"])
        .as_mapping()
        .unwrap_or_else(|| panic!("{file}: services is not a map"));
    let mut ours = 0;
    for (name, svc) in services {
        let target = svc
            .get("build")
            .and_then(|b| b.get("target"))
            .and_then(Value::as_str);
        let known = match target {
            Some("novas") => novas_env(),
            Some("novac") => novac_env(),
            Some(other) => panic!("{file}: {name:?} builds unknown target {other:?}"),
            None => continue,
        };
        ours += 1;
        let set: BTreeSet<String> = compose_env(svc).into_keys().collect();
        assert_known(file, &format!("service {name:?}"), &set, &known);
        assert!(
            svc.get("restart").and_then(Value::as_str) == Some("always"),
            "{file}: {name:?} must restart: always"
        );
    }
    assert!(ours > 0, "{file}: no service built from the Dockerfile");
}

/// `"HOST:CONTAINER"` port mappings of a service.
fn port_map(svc: &Value) -> Vec<(String, String)> {
    strings(at(svc, &["ports"]))
        .into_iter()
        .map(|p| {
            let (h, c) = p.rsplit_once(':').unwrap_or_else(|| panic!("port {p:?}"));
            (h.to_string(), c.to_string())
        })
        .collect()
}

#[test]
fn compose_novas() {
    let file = "compose/docker-compose.yml";
    let docs = yaml_docs(file);
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    check_compose_env(file, doc);

    let novas = service(doc, "novas");
    assert_eq!(str_at(novas, &["build", "target"]), "novas");
    let env = compose_env(novas);
    assert!(
        env.get("NOVAS_AGENT_TOKEN")
            .is_some_and(|v| v.starts_with("${NOVAS_AGENT_TOKEN:?")),
        "the agent token must be required from the operator's environment"
    );
    // Published ports lead to what the server listens on.
    let ports = port_map(novas);
    let container_of = |host: &str| {
        ports
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("{file}: host port {host} not published: {ports:?}"))
    };
    assert_eq!(container_of("80"), env["NOVAS_HTTP_PORT"], "HTTP port");
    assert_eq!(container_of("9022"), env["NOVAS_AGENT_PORT"], "agent port");
    assert_eq!(container_of("2222"), "2222", "SSH front end");
    assert_eq!(container_of("6443"), "6443", "Kubernetes API front end");
    assert_eq!(container_of("40000-41000"), "40000-41000", "resource range");
    // The data dir is a volume.
    let data_dir = &env["NOVAS_DATA_DIR"];
    let volumes = strings(at(novas, &["volumes"]));
    assert!(
        volumes
            .iter()
            .any(|v| v.split(':').nth(1) == Some(data_dir.as_str())
                && doc["volumes"]
                    .get(v.split(':').next().unwrap_or_default())
                    .is_some()),
        "{file}: NOVAS_DATA_DIR {data_dir} is not a named volume: {volumes:?}"
    );
    // The resources file it mounts is valid.
    let resources = &env["NOVAS_RESOURCES"];
    let mount = volumes
        .iter()
        .find(|v| v.split(':').nth(1) == Some(resources.as_str()))
        .unwrap_or_else(|| panic!("{file}: NOVAS_RESOURCES {resources} is not mounted"));
    let local = mount.split(':').next().unwrap_or_default();
    let rel = format!("compose/{}", local.trim_start_matches("./"));
    let parsed = novas::resources::parse_with(&read(&rel), &rel, &|_| None)
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(!parsed.is_empty(), "{rel}: no resources");

    // The optional shared store: MariaDB under a profile, and NOVAS waits
    // for it only when that profile is active.
    let db = service(doc, "mariadb");
    assert_eq!(strings(at(db, &["profiles"])), ["shared-store"]);
    assert!(db.get("ports").is_none(), "the store must not be published");
    assert_eq!(
        at(novas, &["depends_on", "mariadb", "required"]).as_bool(),
        Some(false)
    );
    assert!(env.contains_key("NOVAS_STORE_URL"));
    assert!(
        read(file).contains("mysql://novas:"),
        "{file}: the header should show the shared-store URL"
    );
}

#[test]
fn compose_novac_for_ec2() {
    let file = "compose/novac-compose.yml";
    let docs = yaml_docs(file);
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    check_compose_env(file, doc);
    let novac = service(doc, "novac");
    assert_eq!(strings(at(novac, &["profiles"])), ["novac"]);
    assert_eq!(str_at(novac, &["restart"]), "always");
    assert_eq!(str_at(novac, &["network_mode"]), "host");
    assert_eq!(str_at(novac, &["build", "target"]), "novac");
    let env = compose_env(novac);
    for var in [
        "NOVAC_SERVER",
        "NOVAC_TOKEN",
        "NOVAC_NAME",
        "NOVAC_TAGS",
        "NOVAC_SERVER_FINGERPRINT",
    ] {
        let v = env
            .get(var)
            .unwrap_or_else(|| panic!("{file}: {var} is not set"));
        // Taken from the operator's environment, not hard-coded.
        assert!(v.starts_with(&format!("${{{var}:")), "{file}: {var}={v:?}");
    }
    assert_eq!(strings(at(novac, &["cap_drop"])), ["ALL"]);
}

#[test]
fn every_compose_file_is_checked() {
    let checked = [
        "compose/docker-compose.yml",
        "compose/novac-compose.yml",
        "compose/resources.yaml",
    ];
    for f in files_under("compose") {
        yaml_docs(&f);
        assert!(
            checked.contains(&f.as_str()),
            "{f} is parsed but has no shape check: add one to deploy_files.rs"
        );
    }
}

// ---- Kubernetes --------------------------------------------------------

struct Manifest {
    file: String,
    docs: Vec<Value>,
}

impl Manifest {
    fn load(file: &str) -> Self {
        let docs = yaml_docs(file);
        for d in &docs {
            assert!(
                d.get("apiVersion").is_some() && d.get("kind").is_some(),
                "{file}: a document without apiVersion/kind: {d:?}"
            );
        }
        Self {
            file: file.into(),
            docs,
        }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect()
    }

    fn deployment(&self) -> &Value {
        let d = self.of_kind("Deployment");
        assert_eq!(d.len(), 1, "{}: one Deployment", self.file);
        d[0]
    }
}

/// A container's env as name → the entry.
fn k8s_env(container: &Value) -> BTreeMap<String, Value> {
    at(container, &["env"])
        .as_sequence()
        .expect("env is a list")
        .iter()
        .map(|e| (str_at(e, &["name"]).to_string(), e.clone()))
        .collect()
}

/// Resolves a probe's port (number or container port name).
fn probe_port(container: &Value, probe: &str) -> (String, u64) {
    let get = at(container, &[probe, "httpGet"]);
    let path = str_at(get, &["path"]).to_string();
    let port = match &get["port"] {
        Value::Number(n) => n.as_u64().expect("port number"),
        Value::String(name) => at(container, &["ports"])
            .as_sequence()
            .expect("ports list")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{probe}: no container port named {name}")),
        other => panic!("{probe}: port {other:?}"),
    };
    (path, port)
}

/// What every NOVAC Deployment must have; returns the container.
fn check_novac_deployment(m: &Manifest) -> Value {
    let file = &m.file;
    let dep = m.deployment();
    let pod = at(dep, &["spec", "template", "spec"]);
    let containers = at(pod, &["containers"]).as_sequence().expect("containers");
    assert_eq!(containers.len(), 1, "{file}: one container");
    let c = containers[0].clone();
    assert!(str_at(&c, &["image"]).contains("novac"), "{file}: image");

    let env = k8s_env(&c);
    let set: BTreeSet<String> = env.keys().cloned().collect();
    assert_known(file, "the novac container", &set, &novac_env());
    for var in ["NOVAC_SERVER", "NOVAC_TOKEN", "NOVAC_NAME", "NOVAC_TAGS"] {
        assert!(env.contains_key(var), "{file}: {var} is not set");
    }
    assert!(
        env.contains_key("NOVAC_SERVER_FINGERPRINT") || env.contains_key("NOVAC_CA_FILE"),
        "{file}: the server certificate must be verified"
    );
    let token = &env["NOVAC_TOKEN"];
    assert!(token.get("value").is_none(), "{file}: token in clear text");
    assert!(
        token
            .get("valueFrom")
            .and_then(|v| v.get("secretKeyRef"))
            .is_some(),
        "{file}: NOVAC_TOKEN must come from a Secret"
    );
    let tags = str_at(&env["NOVAC_TAGS"], &["value"]);
    assert!(
        tags.split(';').all(|kv| kv.split_once('=').is_some()),
        "{file}: NOVAC_TAGS {tags:?} is not Key=Value;Key=Value"
    );

    // Probes on the health endpoint the agent serves.
    let health: u64 = str_at(&env["NOVAC_HEALTH_PORT"], &["value"])
        .parse()
        .expect("NOVAC_HEALTH_PORT is a number");
    assert_eq!(probe_port(&c, "livenessProbe"), ("/healthz".into(), health));
    assert_eq!(probe_port(&c, "readinessProbe"), ("/readyz".into(), health));

    assert_eq!(str_at(&c, &["resources", "limits", "memory"]), "512Mi");
    assert_eq!(str_at(&c, &["resources", "limits", "cpu"]), "500m");

    // Least privilege.
    assert_eq!(
        at(pod, &["securityContext", "runAsNonRoot"]).as_bool(),
        Some(true)
    );
    let sc = at(&c, &["securityContext"]);
    assert_eq!(at(sc, &["readOnlyRootFilesystem"]).as_bool(), Some(true));
    assert_eq!(at(sc, &["allowPrivilegeEscalation"]).as_bool(), Some(false));
    assert_eq!(strings(at(sc, &["capabilities", "drop"])), ["ALL"]);
    // KAC: the service-account token is how NOVAC reaches its API server,
    // so it is mounted exactly when the agent serves a cluster.
    assert_eq!(
        at(pod, &["automountServiceAccountToken"]).as_bool(),
        Some(env.contains_key("NOVAC_KUBE_CLUSTER")),
        "{file}: automountServiceAccountToken must match NOVAC_KUBE_CLUSTER"
    );
    let sa = str_at(pod, &["serviceAccountName"]);
    assert!(
        m.of_kind("ServiceAccount")
            .iter()
            .any(|s| s["metadata"]["name"].as_str() == Some(sa)),
        "{file}: ServiceAccount {sa} is not defined"
    );
    // The selector selects the pods.
    let sel = at(dep, &["spec", "selector", "matchLabels"]);
    let labels = at(dep, &["spec", "template", "metadata", "labels"]);
    for (k, v) in sel.as_mapping().expect("matchLabels") {
        assert_eq!(labels.get(k), Some(v), "{file}: selector {k:?}");
    }
    c
}

#[test]
fn k8s_single_agent() {
    let m = Manifest::load("k8s/novac-deployment.yaml");
    let c = check_novac_deployment(&m);
    let dep = m.deployment();
    assert_eq!(at(dep, &["spec", "replicas"]).as_u64(), Some(1));
    // A fixed name: a rolling update would have two pods fight over it.
    assert_eq!(str_at(dep, &["spec", "strategy", "type"]), "Recreate");
    assert!(k8s_env(&c)["NOVAC_NAME"].get("value").is_some());
}

#[test]
fn k8s_ha_agents() {
    let m = Manifest::load("k8s/novac-deployment-ha.yaml");
    let c = check_novac_deployment(&m);
    let dep = m.deployment();
    let replicas = at(dep, &["spec", "replicas"]).as_u64().expect("replicas");
    assert!(
        replicas >= 2,
        "HA needs at least 2 replicas, has {replicas}"
    );
    // Each replica registers under its own pod name.
    let name = &k8s_env(&c)["NOVAC_NAME"];
    assert_eq!(
        str_at(name, &["valueFrom", "fieldRef", "fieldPath"]),
        "metadata.name"
    );
    // Spread across nodes, counting this Deployment's pods.
    let pod = at(dep, &["spec", "template", "spec"]);
    let tsc = at(pod, &["topologySpreadConstraints"])
        .as_sequence()
        .expect("topologySpreadConstraints list");
    let labels = at(dep, &["spec", "template", "metadata", "labels"]);
    assert!(
        tsc.iter().any(|t| {
            t["topologyKey"].as_str() == Some("kubernetes.io/hostname")
                && t["maxSkew"].as_u64() == Some(1)
                && t["labelSelector"]["matchLabels"]
                    .as_mapping()
                    .is_some_and(|ml| ml.iter().all(|(k, v)| labels.get(k) == Some(v)))
        }),
        "no spread across kubernetes.io/hostname: {tsc:?}"
    );
    assert_eq!(
        at(
            dep,
            &["spec", "strategy", "rollingUpdate", "maxUnavailable"]
        )
        .as_u64(),
        Some(0)
    );
    let pdb = m.of_kind("PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert_eq!(at(pdb[0], &["spec", "minAvailable"]).as_u64(), Some(1));
}

/// `kubernetes-validate` (PyPI; scripts/test installs it): NOVA_KUBERNETES_VALIDATE,
/// scripts/test's venv, or PATH. Missing is a failure, not a skip.
fn kubernetes_validate() -> PathBuf {
    if let Some(p) = std::env::var_os("NOVA_KUBERNETES_VALIDATE") {
        return nova_e2e::require_program(&p.to_string_lossy());
    }
    let venv = Path::new("/opt/nova-test-tools/bin/kubernetes-validate");
    if venv.is_file() {
        return venv.to_path_buf();
    }
    nova_e2e::require_program("kubernetes-validate")
}

fn validate(program: &Path, file: &Path, version: &str) -> (bool, String) {
    let mut cmd = std::process::Command::new(program);
    cmd.args(["--strict", "--no-warn", "-k", version]).arg(file);
    let out = nova_e2e::procs::run(cmd, std::time::Duration::from_secs(120));
    (
        out.status.success(),
        format!("{}{}", out.stdout, out.stderr),
    )
}

/// Strict validation against the API schemas catches what the shape
/// checks do not look at: a misspelt field anywhere, a wrong type. Checked
/// for an older and the newest bundled Kubernetes version.
#[test]
fn k8s_manifests_match_the_api_schemas() {
    let kv = kubernetes_validate();
    for f in files_under("k8s") {
        for version in ["1.30.0", "1.37.0"] {
            let (ok, out) = validate(&kv, &root().join(&f), version);
            assert!(ok, "{f} against Kubernetes {version}:\n{out}");
        }
    }
    // The validator does reject: a misspelt field in a copy fails.
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.yaml");
    let text = read("k8s/novac-deployment-ha.yaml")
        .replace("topologySpreadConstraints", "topologySpredConstraints");
    std::fs::write(&bad, text).expect("write");
    let (ok, out) = validate(&kv, &bad, "1.37.0");
    assert!(!ok && out.contains("topologySpredConstraints"), "{out}");
}

#[test]
fn every_k8s_file_is_checked_and_rbac_is_least_privilege() {
    let checked = [
        "k8s/novac-deployment-ha.yaml",
        "k8s/novac-deployment.yaml",
        "k8s/novac-kac-rbac.yaml",
    ];
    for f in files_under("k8s") {
        let m = Manifest::load(&f);
        assert!(
            checked.contains(&f.as_str()),
            "{f} is parsed but has no shape check: add one to deploy_files.rs"
        );
        // RBAC lives in one file, checked below; nowhere else.
        for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
            if f != "k8s/novac-kac-rbac.yaml" {
                assert!(
                    m.of_kind(kind).is_empty(),
                    "{f}: {kind} outside novac-kac-rbac.yaml"
                );
            }
        }
    }
    let m = Manifest::load("k8s/novac-kac-rbac.yaml");
    assert!(m.of_kind("Role").is_empty() && m.of_kind("RoleBinding").is_empty());
    let roles = m.of_kind("ClusterRole");
    assert_eq!(roles.len(), 1, "one ClusterRole");
    let role = roles[0];
    let role_name = str_at(role, &["metadata", "name"]);
    assert!(role.get("aggregationRule").is_none(), "no aggregation");
    let rules = at(role, &["rules"]).as_sequence().expect("rules");
    let mut users = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for r in rules {
        // Only `impersonate`, only users or groups, only by name.
        assert_eq!(strings(at(r, &["verbs"])), ["impersonate"], "{r:?}");
        assert_eq!(strings(at(r, &["apiGroups"])), [""], "{r:?}");
        assert!(r.get("nonResourceURLs").is_none(), "{r:?}");
        let names = strings(at(r, &["resourceNames"]));
        assert!(
            !names.is_empty(),
            "impersonate without resourceNames is anyone: {r:?}"
        );
        assert!(
            names
                .iter()
                .all(|n| !n.contains('*') && !n.starts_with("system:")),
            "{names:?}"
        );
        for res in strings(at(r, &["resources"])) {
            match res.as_str() {
                "users" => users.extend(names.iter().cloned()),
                "groups" => groups.extend(names.iter().cloned()),
                other => {
                    panic!("the KAC role may impersonate users and groups only, not {other:?}")
                }
            }
        }
    }
    // Bound to NOVAC's service account, which the Deployments use.
    let bindings = m.of_kind("ClusterRoleBinding");
    assert_eq!(bindings.len(), 1);
    let b = bindings[0];
    assert_eq!(str_at(b, &["roleRef", "kind"]), "ClusterRole");
    assert_eq!(str_at(b, &["roleRef", "name"]), role_name);
    let subjects = at(b, &["subjects"]).as_sequence().expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(str_at(&subjects[0], &["kind"]), "ServiceAccount");
    let (sa, ns) = (
        str_at(&subjects[0], &["name"]),
        str_at(&subjects[0], &["namespace"]),
    );
    for f in ["k8s/novac-deployment.yaml", "k8s/novac-deployment-ha.yaml"] {
        let d = Manifest::load(f);
        let dep = d.deployment();
        assert_eq!(
            str_at(dep, &["spec", "template", "spec", "serviceAccountName"]),
            sa,
            "{f}"
        );
        assert_eq!(str_at(dep, &["metadata", "namespace"]), ns, "{f}");
    }
    // Exactly the identities the example policies impersonate: the cluster
    // refuses a mapping the role lacks, and the role grants no spare names.
    let pol: Value = serde_yaml::from_str(&read("examples/policies.yaml")).expect("policies");
    let (mut want_users, mut want_groups) = (BTreeSet::new(), BTreeSet::new());
    for p in pol["policies"].as_sequence().expect("policies list") {
        if let Some(k) = p.get("kubernetes") {
            want_users.insert(str_at(k, &["user"]).to_string());
            want_groups.extend(strings(at(k, &["groups"])));
        }
    }
    assert!(
        !want_users.is_empty(),
        "examples/policies.yaml maps no kubernetes identity"
    );
    assert_eq!(
        users, want_users,
        "impersonable users vs examples/policies.yaml"
    );
    assert_eq!(
        groups, want_groups,
        "impersonable groups vs examples/policies.yaml"
    );
}

// ---- Dockerfile --------------------------------------------------------

/// `FROM image AS name` stages, in order.
fn stages(dockerfile: &str) -> Vec<(String, String)> {
    dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            assert!(
                parts.len() == 4 && parts[2].eq_ignore_ascii_case("AS"),
                "stage without a name: {l:?}"
            );
            (parts[1].to_string(), parts[3].to_string())
        })
        .collect()
}

/// The instructions of stage `name` (continuation lines joined).
fn stage_body(dockerfile: &str, name: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut inside = false;
    let mut out = Vec::new();
    for l in joined.lines().map(str::trim) {
        if l.to_ascii_uppercase().starts_with("FROM ") {
            inside = l.split_whitespace().nth(3) == Some(name);
            continue;
        }
        if inside && !l.is_empty() && !l.starts_with('#') {
            out.push(l.to_string());
        }
    }
    out
}

/// Checked, not built: no Docker engine exists on these machines (nor in
/// CI). Where one exists, `docker build --target novas .` and
/// `--target novac` build the two images.
#[test]
fn dockerfile_builds_both_binaries_into_small_non_root_images() {
    let text = read("Dockerfile");
    let st = stages(&text);
    let names: Vec<&str> = st.iter().map(|(_, n)| n.as_str()).collect();
    for t in ["build", "novas", "novac"] {
        assert!(names.contains(&t), "Dockerfile: no stage {t}: {names:?}");
    }
    let build_image = &st.iter().find(|(_, n)| n == "build").expect("build").0;
    assert!(build_image.starts_with("rust:") && build_image.contains("bookworm"));
    let build = stage_body(&text, "build").join("\n");
    assert!(
        build.contains("cargo build --release --locked --bin novas --bin novac"),
        "the build stage builds both binaries: {build}"
    );
    let runtime_of = |stage: &str| -> String {
        // A stage's base, followed through named stages to an image.
        let mut base = st
            .iter()
            .find(|(_, n)| n == stage)
            .expect("stage")
            .0
            .clone();
        while let Some((b, _)) = st.iter().find(|(_, n)| *n == base) {
            base = b.clone();
        }
        base
    };
    for (target, known) in [("novas", novas_env()), ("novac", novac_env())] {
        assert_eq!(runtime_of(target), "debian:bookworm-slim", "{target}");
        let body = stage_body(&text, target);
        assert!(
            body.iter()
                .any(|l| l.starts_with("COPY --from=build") && l.contains(&format!("/{target} "))),
            "{target}: copies its binary from the build stage: {body:?}"
        );
        let user = body
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{target}: no USER"));
        assert!(
            !user.starts_with('0') && !user.starts_with("root"),
            "{target}: USER {user}"
        );
        assert!(
            body.iter()
                .any(|l| l.starts_with("ENTRYPOINT") && l.contains(&format!("/{target}\""))),
            "{target}: entrypoint"
        );
        let env: BTreeSet<String> = body
            .iter()
            .filter_map(|l| l.strip_prefix("ENV "))
            .flat_map(|l| l.split_whitespace())
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        assert_known("Dockerfile", target, &env, &known);
    }
    // The image's HTTP port is the one compose publishes.
    let novas_body = stage_body(&text, "novas").join(" ");
    assert!(novas_body.contains("NOVAS_HTTP_PORT=8080"));
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}

// ---- docs ---------------------------------------------------------------

/// Every variable the binaries read is in the README's settings tables.
#[test]
fn readme_documents_every_variable() {
    let readme = read("README.md");
    for n in novas_env().iter().chain(novac_env().iter()) {
        if n.starts_with("NOVAS_") || n.starts_with("NOVAC_") {
            assert!(
                readme.contains(&format!("`{n}`")),
                "README.md: `{n}` is not documented"
            );
        }
    }
}
