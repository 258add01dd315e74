//! A network namespace joined to the host by a veth pair: a private network
//! whose own 127.0.0.1 the host cannot reach.
//!
//! Names and the /30 subnet come from an index claimed with a lock, so tests
//! running at the same time never collide; a namespace left behind by a
//! killed run under the same index is removed first. Drop kills whatever
//! still runs inside, deletes the namespace and the host end of the veth,
//! also when the test panics.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration};

use crate::{
    locks::{try_claim, Claim},
    procs::{clean_command, command_in, run, run_ok},
    require_program,
};

/// Namespace indexes; the subnet is 10.213.(idx / 64).(idx % 64 * 4)/30.
const MAX_INDEX: u32 = 4096;
const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Netns {
    /// Namespace name, for `ip netns exec`.
    pub name: String,
    /// Host end of the veth.
    pub host_if: String,
    /// Namespace end of the veth.
    pub ns_if: String,
    /// Address of the host end, reachable from inside the namespace.
    pub host_ip: Ipv4Addr,
    /// Address of the namespace end.
    pub ns_ip: Ipv4Addr,
    _claim: Claim,
}

fn ip(args: &[&str]) -> Command {
    let mut cmd = clean_command("ip");
    cmd.args(args);
    cmd
}

impl Netns {
    /// Creates a namespace with loopback up and a veth pair to the host.
    pub fn create() -> Self {
        crate::require_root();
        require_program("ip");
        let start = rand::random::<u32>() % MAX_INDEX;
        let (idx, claim) = (0..MAX_INDEX)
            .map(|i| (start + i) % MAX_INDEX)
            .find_map(|idx| try_claim(&format!("netns-{idx}")).map(|c| (idx, c)))
            .expect("no free namespace index");
        let third = (idx / 64) as u8;
        let base = ((idx % 64) * 4) as u8;
        let ns = Self {
            name: format!("nova-e2e-{idx}"),
            host_if: format!("nve{idx}h"),
            ns_if: format!("nve{idx}n"),
            host_ip: Ipv4Addr::new(10, 213, third, base + 1),
            ns_ip: Ipv4Addr::new(10, 213, third, base + 2),
            _claim: claim,
        };
        ns.teardown();
        ns.setup();
        ns
    }

    fn setup(&self) {
        let host_cidr = format!("{}/30", self.host_ip);
        let ns_cidr = format!("{}/30", self.ns_ip);
        let n = self.name.as_str();
        for args in [
            vec!["netns", "add", n],
            vec![
                "link",
                "add",
                &self.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &self.ns_if,
            ],
            vec!["link", "set", &self.ns_if, "netns", n],
            vec!["addr", "add", &host_cidr, "dev", &self.host_if],
            vec!["link", "set", &self.host_if, "up"],
            vec!["-n", n, "addr", "add", &ns_cidr, "dev", &self.ns_if],
            vec!["-n", n, "link", "set", &self.ns_if, "up"],
            vec!["-n", n, "link", "set", "lo", "up"],
        ] {
            run_ok(ip(&args), TIMEOUT);
        }
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        command_in(Some(&self.name), program)
    }

    /// Kills what runs inside (only our own processes: the index is ours),
    /// then deletes the namespace and the veth. Errors are ignored: parts
    /// may not exist.
    fn teardown(&self) {
        let pids = run(ip(&["netns", "pids", &self.name]), TIMEOUT);
        for pid in pids.stdout.split_whitespace() {
            let mut kill = Command::new("kill");
            kill.args(["-KILL", pid]);
            let _ = run(kill, TIMEOUT);
        }
        let _ = run(ip(&["netns", "del", &self.name]), TIMEOUT);
        let _ = run(ip(&["link", "del", &self.host_if]), TIMEOUT);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}
