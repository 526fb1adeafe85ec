//! The files every container of a pod shares: hostname, resolv.conf, hosts,
//! and a private /dev/shm.

use std::path::Path;

use k8s_cri::v1::DnsConfig;

use crate::error::Error;
use crate::host::Host;

/// Writes `hostname`, `resolv.conf` and `hosts` into the sandbox dir.
pub fn write(dir: &Path, hostname: &str, dns: Option<&DnsConfig>) -> Result<(), Error> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(Error::io(format!("write {}", path.display())))
    };
    write("hostname", format!("{hostname}\n"))?;
    write("resolv.conf", resolv_conf(dns)?)?;
    write(
        "hosts",
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
    )?;
    Ok(())
}

/// The pod's resolv.conf: from its DNSConfig, or else the host's.
fn resolv_conf(dns: Option<&DnsConfig>) -> Result<String, Error> {
    let Some(dns) =
        dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
    else {
        return std::fs::read_to_string("/etc/resolv.conf")
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(String::new())
                } else {
                    Err(e)
                }
            })
            .map_err(Error::io("read /etc/resolv.conf"));
    };
    let mut text = String::new();
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(text)
}

/// Mounts a tmpfs for the pod's /dev/shm.
pub fn mount_shm(host: &dyn Host, path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(Error::io(format!("create {}", path.display())))?;
    host.mount_shm(path).map_err(|source| Error::System {
        what: format!("mount pod /dev/shm at {}", path.display()),
        source,
    })
}

/// Removes the sandbox dir and everything in it; an absent dir is fine.
pub fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
