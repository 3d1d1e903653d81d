//! Servers a test owns, so it may break them: a PostgreSQL cluster (`initdb` in a temp folder)
//! and a RabbitMQ node (its own port, node name and data), each started, stopped, crashed and
//! restarted by the test and by pid only. The machine's shared servers are never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port};

fn os_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// A PostgreSQL cluster of the test's own, on a free port of 127.0.0.1 (trust: a throw-away
/// cluster on loopback), run as the `postgres` OS user when the test runs as root.
pub struct OwnPostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    run_as: Option<(u32, u32)>,
}

impl OwnPostgres {
    fn bin() -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL server binaries in /usr/lib/postgresql (apt-get install postgresql)",
            )
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|d| d.join("pg_ctl").is_file())
            .collect();
        dirs.sort();
        dirs.pop().expect("pg_ctl under /usr/lib/postgresql/*/bin")
    }

    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(self.bin.join(program));
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// Initialises and starts a new cluster.
    pub async fn start() -> OwnPostgres {
        let dir = std::env::temp_dir().join(super::unique("own-pg-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let run_as = is_root().then(|| os_user("postgres").expect("a postgres OS user"));
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
        }
        let pg = OwnPostgres {
            dir,
            bin: Self::bin(),
            port: free_port(),
            run_as,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-U", "postgres", "-A", "trust", "--no-instructions"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.resume().await;
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped server again (same port and data) and waits until it accepts. While it
    /// was down, its port may have been taken for a moment (as the local port of some outgoing
    /// connection on a busy machine): a start that fails is tried again until one succeeds, for up
    /// to 30 s, and the server's log is shown if none does.
    pub async fn resume(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.port,
            self.dir.display()
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-l"])
                .arg(self.dir.join("server.log"))
                .args(["-w", "-o", &opts, "start"])
                .output()
                .expect("pg_ctl start");
            if out.status.success() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "pg_ctl start: {}\nserver.log (last lines, newest first):\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let port = self.port;
        eventually(
            Duration::from_secs(30),
            "the own PostgreSQL",
            || async move { port_open(port).await.then_some(()) },
        )
        .await;
    }

    /// Stops the server the way a crash does (`immediate`: no checkpoint, clients cut).
    pub fn crash(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RabbitMQ node of the test's own: its own AMQP port, node name, distribution port and data.
pub struct OwnRabbit {
    dir: PathBuf,
    pub port: u16,
    node: String,
    child: Option<Child>,
}

impl OwnRabbit {
    fn server() -> PathBuf {
        [
            "/usr/lib/rabbitmq/bin/rabbitmq-server",
            "/usr/sbin/rabbitmq-server",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("RabbitMQ is not installed (apt-get install rabbitmq-server)")
    }

    /// Starts a new node and waits until it accepts AMQP connections.
    pub async fn start() -> OwnRabbit {
        let dir = std::env::temp_dir().join(super::unique("own-mq-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = free_port();
        let mut rabbit = OwnRabbit {
            node: format!("{}@localhost", super::unique("rabbit-test-")),
            dir,
            port,
            child: None,
        };
        std::fs::write(
            rabbit.dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\nlog.console = true\nlog.console.level = warning\n"
            ),
        )
        .expect("config");
        std::fs::write(rabbit.dir.join("enabled_plugins"), "[].\n").expect("plugins");
        rabbit.resume().await;
        rabbit
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// Starts the node again (same data) and waits for it.
    pub async fn resume(&mut self) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .expect("log");
        let child = Command::new(Self::server())
            .env("HOME", self.path(""))
            .env("RABBITMQ_NODENAME", &self.node)
            .env(
                "RABBITMQ_DIST_PORT",
                (self.port as u32 + 10_000).min(65_000).to_string(),
            )
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env("RABBITMQ_PID_FILE", self.path("node.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("starting rabbitmq-server");
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(60),
            "the own RabbitMQ node",
            || async move { port_open(port).await.then_some(()) },
        )
        .await;
    }

    /// Kills the node outright (SIGKILL to its process group), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            let _ = child.wait();
        }
    }

    /// Where the node keeps its log (for failure messages).
    pub fn log(&self) -> &Path {
        &self.dir
    }
}

impl Drop for OwnRabbit {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
