//! nftables rulesets: written as one `nft -f` file each and loaded in one transaction
//! (all of it or none), in the host namespace or a sandbox's.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::config::{
    EgressPolicy, Names, EGRESS_CHAIN, GUEST_ADDR, SANDBOX_TABLE, SANDBOX_VETH, TAP_NAME,
};

/// The nft binary: on PATH, or /usr/sbin/nft (PATH of a non-login root may lack sbin).
fn nft() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nft"));
    on_path
        .chain(["/usr/sbin/nft".into(), "/sbin/nft".into()])
        .find(|p| p.is_file())
}

/// Runs `nft ARGS` with `input` on stdin, inside the namespace `netns` (None: this
/// one). Err: nft's own message.
pub fn run(netns: Option<&str>, args: &[&str], input: &str) -> Result<String, String> {
    let bin = nft().ok_or("nft not found: install the nftables package")?;
    let ns = match netns {
        Some(n) => Some(super::netns::open(n).map_err(|e| format!("namespace {n}: {e}"))?),
        None => None,
    };
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = ns {
        use std::os::fd::AsRawFd;
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; fd stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = spawn(&mut cmd, input);
        drop(ns);
        return out;
    }
    spawn(&mut cmd, input)
}

fn spawn(cmd: &mut Command, input: &str) -> Result<String, String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("cannot write to nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr);
        Err(msg.trim().replace('\n', "; "))
    }
}

/// Loads `ruleset` atomically.
pub fn load(netns: Option<&str>, ruleset: &str) -> Result<(), String> {
    run(netns, &["-f", "-"], ruleset).map(drop)
}

/// The tables `nft list tables` shows: (family, name).
pub fn tables(netns: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let out = run(netns, &["list", "tables"], "")?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("table"), Some(f), Some(n)) => Some((f.to_string(), n.to_string())),
                _ => None,
            }
        })
        .collect())
}

/// Deletes table `family name` if it exists (one nft run: the error of a missing table
/// is success).
pub fn delete_table(netns: Option<&str>, family: &str, name: &str) -> Result<(), String> {
    match load(netns, &format!("delete table {family} {name}\n")) {
        Err(e) if e.contains("No such file or directory") => Ok(()),
        r => r,
    }
}

/// The egress chain's rules for `policy`.
fn egress_rules(policy: EgressPolicy) -> &'static str {
    match policy {
        EgressPolicy::DenyAll => "",
        EgressPolicy::AllowAll => "\t\taccept\n",
    }
}

/// The sandbox namespace's table: the guest may send only from its own address; new
/// connections out of the veth go through the egress chain (empty: dropped by the
/// forward chain's policy); replies come back; nothing new comes in; the guest cannot
/// talk to the namespace itself; what leaves is masqueraded to the veth's address.
pub fn sandbox_ruleset(policy: EgressPolicy) -> String {
    format!(
        "table inet {SANDBOX_TABLE} {{
	chain forward {{
		type filter hook forward priority filter; policy drop;
		ct state invalid drop
		meta nfproto ipv6 drop
		iifname \"{TAP_NAME}\" ip saddr != {GUEST_ADDR} counter drop
		ct state established,related accept
		iifname \"{TAP_NAME}\" oifname \"{SANDBOX_VETH}\" ct state new jump {EGRESS_CHAIN}
	}}
	chain {EGRESS_CHAIN} {{
{rules}	}}
	chain input {{
		type filter hook input priority filter; policy accept;
		iifname \"{TAP_NAME}\" ct state established,related accept
		iifname \"{TAP_NAME}\" drop
		iifname \"{SANDBOX_VETH}\" ct state established,related accept
		iifname \"{SANDBOX_VETH}\" drop
	}}
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		oifname \"{SANDBOX_VETH}\" masquerade
	}}
}}
",
        rules = egress_rules(policy)
    )
}

/// Replaces the egress chain's rules in one transaction.
pub fn policy_update(policy: EgressPolicy) -> String {
    format!(
        "flush chain inet {SANDBOX_TABLE} {EGRESS_CHAIN}\ntable inet {SANDBOX_TABLE} {{\n\tchain {EGRESS_CHAIN} {{\n{}\t}}\n}}\n",
        egress_rules(policy)
    )
}

/// The host namespace's table for one sandbox: what comes from its veth must carry its
/// address and may be forwarded (the sandbox's own table has decided); nothing new goes
/// into its veth (no other sandbox or host reaches it); nothing new from it reaches the
/// host itself; optionally masqueraded again on the way out.
pub fn host_ruleset(names: &Names, sandbox_addr: Ipv4Addr, host_nat: bool) -> String {
    let veth = &names.host_veth;
    let nat = if host_nat {
        format!(
            "\tchain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr {sandbox_addr} oifname != \"{veth}\" masquerade
	}}
"
        )
    } else {
        String::new()
    };
    format!(
        "table ip {table} {{
	chain forward {{
		type filter hook forward priority filter; policy accept;
		iifname \"{veth}\" ip saddr != {sandbox_addr} drop
		iifname \"{veth}\" accept
		oifname \"{veth}\" ct state established,related accept
		oifname \"{veth}\" drop
	}}
	chain input {{
		type filter hook input priority filter; policy accept;
		iifname \"{veth}\" ct state established,related accept
		iifname \"{veth}\" drop
	}}
{nat}}}
",
        table = names.host_table
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_egress_chain_is_empty_and_allow_all_accepts() {
        let deny = sandbox_ruleset(EgressPolicy::DenyAll);
        assert!(deny.contains("policy drop;"));
        assert!(deny.contains("chain egress {\n\t}"), "{deny}");
        let allow = sandbox_ruleset(EgressPolicy::AllowAll);
        assert!(allow.contains("chain egress {\n\t\taccept\n\t}"), "{allow}");
        assert!(policy_update(EgressPolicy::DenyAll).starts_with("flush chain inet kiln egress\n"));
        let names = Names::of("x").unwrap();
        let host = host_ruleset(&names, Ipv4Addr::new(10, 200, 0, 2), false);
        assert!(!host.contains("masquerade"));
        assert!(host.starts_with(&format!("table ip {} {{", names.host_table)));
        assert!(host_ruleset(&names, Ipv4Addr::new(10, 200, 0, 2), true).contains("masquerade"));
    }
}
