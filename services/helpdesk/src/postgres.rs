//! A private PostgreSQL for `helpdesk up`, started from the machine's PostgreSQL binaries in a
//! folder under `--data-dir`, reused on the next start. Works as root too: the server then runs as
//! the `postgres` (or `nobody`) user, which owns the data folder.
//!
//! Only the platform gets in: the server listens on 127.0.0.1 and on a Unix socket inside its own
//! data folder (mode 0700, so only the server's user and root reach it), and every connection
//! must authenticate with scram-sha-256 as `postgres` with a password generated once and kept in
//! `<data-dir>/postgres-password` (mode 0600, like the other local secrets). The platform connects
//! through the socket: no TCP stack between the services and their database (README, benchmarks:
//! 7–20 % more requests per second against a shared server). A data folder whose path
//! is too long for a socket address, or holds characters other than letters, digits and `/._-`,
//! gets no socket, and the platform uses TCP. A data folder made by an earlier version (`trust`,
//! or no socket line) is converted on the next start.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A running private PostgreSQL.
pub struct EmbeddedPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    password: String,
    run_as: Option<(u32, u32)>,
    /// Whether this process started the server (not adopted a running one).
    started_here: bool,
}

/// The `pg_hba.conf` of the private server: password (scram) on the server's own Unix socket and
/// on loopback TCP, nothing else.
const PG_HBA: &str = "# Written by helpdesk up: only password (scram-sha-256) logins, on the socket in the data folder and on loopback.\n\
local all all scram-sha-256\n\
host all all 127.0.0.1/32 scram-sha-256\n";

/// The longest socket path a `sockaddr_un` holds: 108 bytes with the terminating NUL on Linux,
/// 104 on macOS and the BSDs.
const MAX_SOCKET_PATH: usize = if cfg!(target_os = "linux") { 107 } else { 103 };

/// The folder for the server's Unix socket: its data folder, when the socket's path fits a
/// socket address and the folder's name needs no quoting in the server's options (else `None`,
/// and the server listens on TCP only). The data folder is mode 0700, owned by the server's user.
fn socket_dir(data: &Path) -> Option<&str> {
    let dir = data.to_str()?;
    let plain = dir
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    // `.s.PGSQL.<port>`, the port at most five digits.
    (plain && dir.starts_with('/') && dir.len() + "/.s.PGSQL.65535".len() <= MAX_SOCKET_PATH)
        .then_some(dir)
}

/// The stored password, or a new one (32 random bytes, hex) written with mode 0600.
fn password(path: &Path) -> anyhow::Result<String> {
    if let Ok(p) = std::fs::read_to_string(path)
        && !p.trim().is_empty()
    {
        return Ok(p.trim().to_string());
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let password = hex::encode(bytes);
    crate::write_private(path, &format!("{password}\n"))?;
    Ok(password)
}

/// Writes `contents` to a new file only `owner` can read.
fn write_owned(path: &Path, contents: &str, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    crate::write_private(path, contents)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("cannot hand {} to the PostgreSQL user", path.display()))?;
    }
    Ok(())
}

const INSTALL_HINT: &str = "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) or set DATABASE_URL";

fn has_binaries(dir: &Path) -> bool {
    dir.join("pg_ctl").is_file() && dir.join("initdb").is_file()
}

/// The folder holding `initdb` and `pg_ctl`: `PG_BIN_DIR` when set (and only there), else on
/// PATH, else the usual install folders (newest version first).
pub fn find_binaries() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        anyhow::ensure!(
            has_binaries(&dir),
            "PostgreSQL binaries (initdb, pg_ctl) not found in PG_BIN_DIR={}: {INSTALL_HINT}",
            dir.display()
        );
        return Ok(dir);
    }
    search_binaries()
        .with_context(|| format!("PostgreSQL binaries (initdb, pg_ctl) not found: {INSTALL_HINT}"))
}

fn search_binaries() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_binaries(&dir) {
                return Some(dir);
            }
        }
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for root in [
        "/usr/lib/postgresql",
        "/usr/local/lib/postgresql",
        "/opt/homebrew/opt",
    ] {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                candidates.push(e.path().join("bin"));
            }
        }
    }
    candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
    candidates.retain(|d| has_binaries(d));
    // Highest major version first ("9.6" < "15" < "16").
    candidates.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.trim_start_matches("postgresql@")
                    .split('.')
                    .next()
                    .and_then(|v| v.parse::<u32>().ok())
            })
            .unwrap_or(0)
    });
    candidates.pop()
}

fn uid_gid_of(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl EmbeddedPostgres {
    /// Initialises (first time) and starts the server in `<data_dir>/postgres`, taking up to
    /// `max_connections` clients. A server still running on that folder (after a crash) is
    /// adopted as it is, and stopped with the platform.
    pub fn start(data_dir: &Path, max_connections: u32) -> anyhow::Result<Self> {
        let bin = find_binaries()?;
        let data = data_dir.join("postgres");
        let run_as = if running_as_root() {
            Some(uid_gid_of("postgres").or_else(|| uid_gid_of("nobody")).context("running as root, but there is no postgres or nobody user to run PostgreSQL as")?)
        } else {
            None
        };
        let mut pg = Self {
            bin,
            data,
            port: 0,
            password: password(&data_dir.join("postgres-password"))?,
            run_as,
            started_here: false,
        };
        let initialised = pg.data.join("PG_VERSION").exists();
        if initialised && !pg.requires_password() {
            // Made by an earlier version (with `trust`, or without the socket's line): set the
            // password and write our `pg_hba.conf`.
            if pg.running_port().is_some() {
                pg.pg_ctl(&["stop", "-m", "fast", "-w"])?;
            }
            pg.require_password()?;
        }
        if let Some(port) = pg.running_port() {
            pg.port = port;
            return Ok(pg);
        }
        if !initialised {
            pg.init()?;
        }
        pg.port = free_port()?;
        let sockets = socket_dir(&pg.data).unwrap_or("");
        pg.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            &pg.data.join("server.log").to_string_lossy(),
            "-o",
            &format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{sockets}' \
                 -c max_connections={max_connections}",
                pg.port
            ),
        ])
        .with_context(|| {
            format!(
                "PostgreSQL did not start; see {}",
                pg.data.join("server.log").display()
            )
        })?;
        pg.started_here = true;
        Ok(pg)
    }

    /// Whether the server's `pg_hba.conf` is ours: no `trust`, passwords only.
    fn requires_password(&self) -> bool {
        std::fs::read_to_string(self.data.join("pg_hba.conf")).is_ok_and(|hba| hba == PG_HBA)
    }

    /// Sets the password in single-user mode (no server, no network) and writes our
    /// `pg_hba.conf`.
    fn require_password(&self) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = self
            .command("postgres")
            .args(["--single", "-D"])
            .arg(&self.data)
            .arg("postgres")
            .stdin(Stdio::piped())
            .spawn()
            .context("cannot run postgres --single")?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(
                stdin,
                "ALTER ROLE postgres PASSWORD '{}';",
                self.password.replace('\'', "''")
            )?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "cannot set the PostgreSQL password: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        write_owned(&self.data.join("pg_hba.conf"), PG_HBA, self.run_as)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn init(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data)
            .with_context(|| format!("cannot create {}", self.data.display()))?;
        if let Some((uid, gid)) = self.run_as {
            chown_tree(&self.data, uid, gid)
                .context("cannot hand the PostgreSQL folder to its user")?;
            // The server's user must reach the folder.
            let mut dir = self.data.parent();
            while let Some(d) = dir {
                if let Ok(m) = std::fs::metadata(d)
                    && m.mode() & 0o001 == 0
                    && m.uid() != uid
                {
                    bail!(
                        "{} is not reachable by the PostgreSQL user (uid {uid}); use a --data-dir outside it (e.g. under /var/tmp) or set DATABASE_URL",
                        d.display()
                    );
                }
                dir = d.parent();
            }
        }
        // initdb reads the superuser's password from a file its user can read; it is removed
        // right after.
        let pwfile = self
            .data
            .parent()
            .unwrap_or(&self.data)
            .join(".postgres-initdb-password");
        write_owned(&pwfile, &format!("{}\n", self.password), self.run_as)?;
        let out = self
            .command("initdb")
            .args([
                "-D",
                &self.data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile",
                &pwfile.to_string_lossy(),
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .output()
            .context("cannot run initdb");
        let _ = std::fs::remove_file(&pwfile);
        let out = out?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        write_owned(&self.data.join("pg_hba.conf"), PG_HBA, self.run_as)
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .context("cannot run pg_ctl")?;
        if !out.status.success() {
            bail!(
                "pg_ctl {}: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The port of a server already running on this data folder (from `postmaster.pid`).
    fn running_port(&self) -> Option<u16> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid: u32 = lines.next()?.trim().parse().ok()?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return None;
        }
        lines.nth(2)?.trim().parse().ok()
    }

    /// The server's Unix socket, when it has one (a server adopted from an earlier version
    /// may listen on TCP only).
    fn socket(&self) -> Option<&str> {
        let dir = socket_dir(&self.data)?;
        std::fs::symlink_metadata(self.data.join(format!(".s.PGSQL.{}", self.port)))
            .is_ok_and(|m| m.file_type().is_socket())
            .then_some(dir)
    }

    /// `postgres://postgres:<password>@localhost:<port>/postgres?host=<socket folder>`, or
    /// `…@127.0.0.1:<port>/postgres` without a socket (never printed).
    pub fn url(&self) -> String {
        match self.socket() {
            Some(dir) => format!(
                "postgres://postgres:{}@localhost:{}/postgres?host={dir}",
                self.password, self.port
            ),
            None => format!(
                "postgres://postgres:{}@127.0.0.1:{}/postgres",
                self.password, self.port
            ),
        }
    }

    /// For one-off commands (`migrate`, `dlq`): stops the server only if this process started
    /// it, so a running `helpdesk up` keeps its database.
    pub fn release(&self) {
        if self.started_here {
            self.stop();
        }
    }

    /// Stops the server, whether this process started it or adopted it after a crash: a clean
    /// stop of the platform leaves nothing running.
    pub fn stop(&self) {
        if self.running_port().is_some()
            && let Err(e) = self.pg_ctl(&["stop", "-m", "fast", "-w"])
        {
            eprintln!("helpdesk: stopping PostgreSQL failed: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_goes_in_the_data_folder_only_when_its_path_fits_and_needs_no_quoting() {
        let dir = "/var/tmp/helpdesk-data/postgres";
        assert_eq!(socket_dir(Path::new(dir)), Some(dir));
        // `<dir>/.s.PGSQL.65535` must fit a socket address (107 bytes).
        let longest = format!(
            "/{}",
            "a".repeat(MAX_SOCKET_PATH - "/.s.PGSQL.65535".len() - 1)
        );
        assert_eq!(socket_dir(Path::new(&longest)), Some(longest.as_str()));
        let too_long = format!("{longest}b");
        assert_eq!(socket_dir(Path::new(&too_long)), None);
        // Spaces, quotes and commas would need quoting in the server's options or its list of
        // socket folders; such a folder keeps TCP.
        for odd in [
            "/tmp/my data/postgres",
            "/tmp/it's/postgres",
            "/tmp/a,b/postgres",
        ] {
            assert_eq!(socket_dir(Path::new(odd)), None, "{odd}");
        }
        assert_eq!(socket_dir(Path::new("relative/postgres")), None);
    }
}
