//! Starting a container as a local process: its own mount namespace with the pod's volumes bound
//! at their mount paths, the UID/GID/supplementary groups the securityContext implies, exactly
//! the environment it was given, its own session and process group (so stopping it stops its
//! children, and the kernel schedules it as a group of its own, as a container's cgroup is: with
//! autogroup a nice value counts only against the threads of its session, so a service that
//! lowers some of its threads lowers them against its own, not against every other pod), and its
//! output in a log file.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

/// A volume bound into the container's file system.
#[derive(Debug, Clone)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything needed to start one container.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub log: PathBuf,
    pub cwd: PathBuf,
    pub stdin: Option<Vec<u8>>,
}

/// A running container process.
pub struct Running {
    pub child: tokio::process::Child,
    pub pid: i32,
}

impl Launch {
    pub fn spawn(&self) -> anyhow::Result<Running> {
        for m in &self.mounts {
            if m.source.is_dir() {
                std::fs::create_dir_all(&m.target)
            } else {
                if let Some(parent) = m.target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                if !m.target.exists() {
                    std::fs::write(&m.target, b"")?;
                }
                Ok(())
            }
            .with_context(|| format!("creating the mount point {}", m.target.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // Prepared before the fork: the child only makes system calls.
        let mounts: Vec<(CString, CString, bool)> = self
            .mounts
            .iter()
            .map(|m| {
                (
                    CString::new(m.source.to_string_lossy().as_bytes()).unwrap_or_default(),
                    CString::new(m.target.to_string_lossy().as_bytes()).unwrap_or_default(),
                    m.read_only,
                )
            })
            .collect();
        let root = CString::new("/").unwrap_or_default();
        let (uid, gid, groups) = (self.uid, self.gid, self.groups.clone());
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // system calls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // A session of its own, led by the child: its process group is its pid.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (src, dst, ro) in &mounts {
                    if libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    if *ro
                        && libc::mount(
                            std::ptr::null(),
                            dst.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        if let (Some(input), Some(mut stdin)) = (self.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(&input).await;
            });
        }
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        Ok(Running { child, pid })
    }
}

impl Running {
    /// SIGTERM to the process group, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if self.pid > 0 {
            // SAFETY: signalling our own child's process group.
            unsafe { libc::kill(-self.pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            if self.pid > 0 {
                // SAFETY: as above.
                unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            }
            let _ = self.child.wait().await;
        }
    }

    /// The exit code when the process has ended (a signal counts as 128 + signal).
    pub fn exited(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        match self.child.try_wait() {
            Ok(Some(status)) => Some(
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            ),
            Ok(None) => None,
            Err(_) => Some(-1),
        }
    }
}

/// The last `n` lines of a log file (for status messages and failure reports).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// uid and gid of an OS user, from /etc/passwd.
pub fn os_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Whether `uid` has an entry in /etc/passwd.
pub fn uid_exists(uid: u32) -> bool {
    std::fs::read_to_string("/etc/passwd").is_ok_and(|p| {
        p.lines()
            .any(|l| l.split(':').nth(2) == Some(&uid.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(process group, session)` of `pid`, from `/proc/PID/stat`.
    fn group_and_session(pid: i32) -> (i32, i32) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        (fields[2].parse().unwrap(), fields[3].parse().unwrap())
    }

    /// A container leads its own session and process group: stopping it stops its children, and
    /// nice values inside it count against its own threads only (autogroup), as in a container.
    #[tokio::test]
    async fn a_container_leads_its_own_session_and_process_group() {
        let dir = std::env::temp_dir().join(format!("simcluster-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: reading our own ids.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let launch = Launch {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "sleep 30 & wait".into()],
            env: vec![],
            mounts: vec![],
            uid,
            gid,
            groups: vec![gid],
            log: dir.join("log"),
            cwd: dir.clone(),
            stdin: None,
        };
        let mut running = launch.spawn().unwrap();
        assert_eq!(group_and_session(running.pid), (running.pid, running.pid));
        let ours = group_and_session(std::process::id() as i32).1;
        assert_ne!(ours, running.pid, "not the test's session");
        running.stop(Duration::from_secs(5)).await;
        assert!(running.exited().is_some(), "stopped with its children");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
