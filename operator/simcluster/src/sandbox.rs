//! The cluster's network: a network namespace of its own (loopback only, so every pod can have
//! its own 127.x address and the same port) and a mount namespace in which `/etc/hosts` is the
//! cluster's DNS (Service names → Service addresses, external names → harness processes).
//!
//! [`enter`] must run on the thread that then builds the tokio runtime, before any other thread
//! of the harness exists: namespaces belong to threads, and the runtime's threads and every
//! process the harness starts inherit them. Nothing outside the namespace is touched except
//! empty mount-point folders that pods need (e.g. `/etc/helpdesk/jwt`), created once.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};

/// The namespaces of one simulated cluster.
pub struct Sandbox {
    dir: PathBuf,
    hosts: Mutex<Vec<(Ipv4Addr, Vec<String>)>>,
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn check(rc: libc::c_int, what: &str) -> anyhow::Result<()> {
    if rc != 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Bind-mounts `src` onto `dst` (both must exist).
pub fn bind_mount(src: &Path, dst: &Path, read_only: bool) -> std::io::Result<()> {
    let (s, d) = (cstr(&src.to_string_lossy()), cstr(&dst.to_string_lossy()));
    // SAFETY: plain syscalls on valid C strings.
    unsafe {
        if libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if read_only
            && libc::mount(
                std::ptr::null(),
                d.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Enters fresh network and mount namespaces (see the module documentation).
pub fn enter(dir: &Path) -> anyhow::Result<Sandbox> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the simulated cluster needs root: it creates network and mount namespaces and runs pods under their own UIDs"
        );
    }
    std::fs::create_dir_all(dir)?;
    // SAFETY: unshare and mount are called with valid arguments; they affect this thread (and
    // what it starts afterwards) only.
    unsafe {
        check(
            libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS),
            "unshare(network, mount)",
        )?;
        let root = cstr("/");
        check(
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "making mounts private",
        )?;
    }
    let out = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .context("running `ip` (Debian: apt-get install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip link set lo up: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let sandbox = Sandbox {
        dir: dir.to_path_buf(),
        hosts: Mutex::new(Vec::new()),
    };
    let hosts = sandbox.hosts_path();
    sandbox.write_hosts()?;
    bind_mount(&hosts, Path::new("/etc/hosts"), false)
        .context("mounting the cluster's /etc/hosts")?;
    Ok(sandbox)
}

impl Sandbox {
    fn hosts_path(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    fn write_hosts(&self) -> anyhow::Result<()> {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            text.push_str(&format!("127.0.0.1\t{}\n", name.trim()));
        }
        for (ip, names) in self.hosts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            text.push_str(&format!("{ip}\t{}\n", names.join(" ")));
        }
        // Rewritten in place: the bind mount follows the file, not its name.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.hosts_path())?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Makes `names` resolve to `ip` in the cluster (like cluster DNS).
    pub fn add_host(&self, ip: Ipv4Addr, names: Vec<String>) -> anyhow::Result<()> {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ip, names));
        self.write_hosts()
    }
}
