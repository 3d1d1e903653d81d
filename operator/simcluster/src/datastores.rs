//! The managed datastores' images, played by the machine's own servers with what their official
//! images do at first start: `postgres:*` creates `POSTGRES_USER` with `POSTGRES_PASSWORD`
//! (scram-sha-256, password required from any address) and `POSTGRES_DB`; `rabbitmq:*` creates
//! `RABBITMQ_DEFAULT_USER`/`RABBITMQ_DEFAULT_PASS` and uses `RABBITMQ_ERLANG_COOKIE`. Data lives
//! in the pod's claim folder, so it survives the pod, as a PVC's would. Each listens on its pod's
//! address; the harness also uses these functions for "external" datastores outside the cluster.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::process::{self, Launch, Running};

fn var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The newest PostgreSQL install's `bin` folder.
pub fn pg_bin() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL binaries not found in /usr/lib/postgresql (apt-get install postgresql)",
        )?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("postgres").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .context("no PostgreSQL server binaries under /usr/lib/postgresql")
}

fn run_as_postgres(cmd: &mut std::process::Command) -> anyhow::Result<(u32, u32)> {
    use std::os::unix::process::CommandExt;
    let (uid, gid) = process::os_user("postgres")
        .context("the machine has no postgres user to run PostgreSQL as")?;
    cmd.uid(uid).gid(gid);
    Ok((uid, gid))
}

/// An init container or hook of a datastore pod: its command and resolved env.
pub struct Step {
    pub name: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
}

fn append_log(log: &Path, text: &[u8]) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = f.write_all(text);
    }
}

/// Runs a `postgres:*` init container's command against the pod's claim, as the image would:
/// `$PGDATA` is the claim's data folder, the server binaries on `PATH`, the postgres user.
fn run_postgres_init(bin: &Path, data: &Path, step: &Step, log: &Path) -> anyhow::Result<()> {
    let (program, args) = step
        .command
        .split_first()
        .with_context(|| format!("init container {} has no command", step.name))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).env_clear().current_dir("/");
    for (k, v) in &step.env {
        if k != "PGDATA" && k != "PATH" {
            cmd.env(k, v);
        }
    }
    cmd.env("PGDATA", data)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
    run_as_postgres(&mut cmd)?;
    let out = cmd
        .output()
        .with_context(|| format!("running init container {}", step.name))?;
    append_log(log, &out.stdout);
    append_log(log, &out.stderr);
    if !out.status.success() {
        bail!(
            "init container {} failed ({}): {}",
            step.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Starts PostgreSQL for a pod: its init containers first (in order), then the image's
/// entrypoint (initialising the claim on first start) and the server.
pub async fn postgres(
    ip: Ipv4Addr,
    pod_dir: &Path,
    work: &Path,
    env: &[(String, String)],
    init_containers: Vec<Step>,
    log: &Path,
) -> anyhow::Result<Running> {
    let user = var(env, "POSTGRES_USER").unwrap_or("postgres").to_string();
    let password = var(env, "POSTGRES_PASSWORD")
        .context("POSTGRES_PASSWORD is not set: the postgres image refuses to start")?
        .to_string();
    let db = var(env, "POSTGRES_DB").unwrap_or(&user).to_string();
    let data = work
        .join("pvc")
        .join(pod_dir.file_name().unwrap_or_default())
        .join("pgdata");
    let bin = pg_bin()?;
    let pod_dir = pod_dir.to_path_buf();
    let (uid, gid) = process::os_user("postgres").context("no postgres user on the machine")?;
    {
        let (data, bin, log) = (data.clone(), bin.clone(), log.to_path_buf());
        tokio::task::spawn_blocking(move || {
            init_containers
                .iter()
                .try_for_each(|step| run_postgres_init(&bin, &data, step, &log))
        })
        .await??;
    }
    {
        let (data, bin, pod_dir) = (data.clone(), bin.clone(), pod_dir.clone());
        tokio::task::spawn_blocking(move || {
            init_postgres(&data, &bin, &pod_dir, &user, &password, &db)
        })
        .await??;
    }
    std::os::unix::fs::chown(&pod_dir, Some(uid), Some(gid))?;
    Launch {
        program: bin.join("postgres"),
        args: vec![
            "-D".into(),
            data.to_string_lossy().into(),
            "-c".into(),
            format!("listen_addresses={ip}"),
            "-c".into(),
            "port=5432".into(),
            "-c".into(),
            format!("unix_socket_directories={}", pod_dir.display()),
        ],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        mounts: Vec::new(),
        uid,
        gid,
        groups: vec![gid],
        log: log.to_path_buf(),
        cwd: pod_dir,
        stdin: None,
    }
    .spawn()
}

fn init_postgres(
    data: &Path,
    bin: &Path,
    pod_dir: &Path,
    user: &str,
    password: &str,
    db: &str,
) -> anyhow::Result<()> {
    if data.join("PG_VERSION").exists() {
        return Ok(());
    }
    let (uid, gid) = process::os_user("postgres").context("no postgres user on the machine")?;
    std::fs::create_dir_all(data)?;
    for d in [data, data.parent().unwrap_or(data)] {
        std::os::unix::fs::chown(d, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
    let pwfile = pod_dir.join(".pwfile");
    std::fs::write(&pwfile, format!("{password}\n"))?;
    std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))?;
    let mut initdb = std::process::Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(data)
        .args([
            "-U",
            user,
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-instructions",
        ])
        .arg("--pwfile")
        .arg(&pwfile);
    run_as_postgres(&mut initdb)?;
    let out = initdb.output().context("running initdb")?;
    let _ = std::fs::remove_file(&pwfile);
    if !out.status.success() {
        bail!("initdb: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    // As the image does: a password is required, from any address.
    let hba = data.join("pg_hba.conf");
    let mut text = std::fs::read_to_string(&hba)?;
    text.push_str("\nhost all all all scram-sha-256\n");
    std::fs::write(&hba, text)?;
    if db != "postgres" {
        use std::io::Write;
        let mut single = std::process::Command::new(bin.join("postgres"));
        single
            .args(["--single", "-D"])
            .arg(data)
            .arg("template1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        run_as_postgres(&mut single)?;
        let mut child = single.spawn().context("postgres --single")?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "CREATE DATABASE \"{}\";", db.replace('"', "\"\""))?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "creating database {db}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// A postStart hook running next to its container; `Err` kills the container, as the kubelet does.
pub type Hook = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Starts a RabbitMQ node for a pod, on its own address, node name and data folder, and its
/// container's postStart hook (with the node's CLI environment, as inside the image).
pub async fn rabbitmq(
    ip: Ipv4Addr,
    pod_dir: &Path,
    work: &Path,
    env: &[(String, String)],
    post_start: Option<Step>,
    log: &Path,
) -> anyhow::Result<(Running, Option<Hook>)> {
    let user = var(env, "RABBITMQ_DEFAULT_USER").unwrap_or("guest");
    let pass = var(env, "RABBITMQ_DEFAULT_PASS").unwrap_or("guest");
    let base = work
        .join("pvc")
        .join(pod_dir.file_name().unwrap_or_default())
        .join("rabbitmq");
    std::fs::create_dir_all(&base)?;
    let home = pod_dir.join("home");
    std::fs::create_dir_all(&home)?;
    let cookie = home.join(".erlang.cookie");
    let _ = std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o600));
    std::fs::write(
        &cookie,
        var(env, "RABBITMQ_ERLANG_COOKIE").unwrap_or("simcluster-cookie"),
    )?;
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
    let conf = pod_dir.join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!(
            "listeners.tcp.1 = {ip}:5672\ndefault_user = {user}\ndefault_pass = {pass}\n\
             loopback_users = none\nlog.console = true\nlog.console.level = warning\n"
        ),
    )?;
    let plugins = pod_dir.join("enabled_plugins");
    std::fs::write(&plugins, "[].\n")?;
    let node = format!(
        "rabbit-{}@localhost",
        pod_dir
            .file_name()
            .map(|n| n
                .to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "-"))
            .unwrap_or_default()
    );
    let server = [
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        "/usr/sbin/rabbitmq-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .context("RabbitMQ is not installed (apt-get install rabbitmq-server)")?;
    let s = |p: &Path| p.to_string_lossy().to_string();
    let launch = Launch {
        program: server,
        args: Vec::new(),
        env: vec![
            ("PATH".into(), "/usr/lib/rabbitmq/bin:/usr/bin:/bin".into()),
            ("HOME".into(), s(&home)),
            ("RABBITMQ_NODENAME".into(), node),
            // Distribution listens on every address: one port per node in the shared namespace.
            (
                "RABBITMQ_DIST_PORT".into(),
                (25000 + u16::from(ip.octets()[3])).to_string(),
            ),
            ("RABBITMQ_CONFIG_FILE".into(), s(&conf)),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), s(&plugins)),
            ("RABBITMQ_MNESIA_BASE".into(), s(&base.join("mnesia"))),
            ("RABBITMQ_LOG_BASE".into(), s(&pod_dir.join("log"))),
            ("RABBITMQ_PID_FILE".into(), s(&pod_dir.join("rabbitmq.pid"))),
        ],
        mounts: Vec::new(),
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        log: log.to_path_buf(),
        cwd: pod_dir.to_path_buf(),
        stdin: None,
    };
    let running = launch.spawn()?;
    let hook = post_start.map(|step| {
        let mut cli_env = step.env.clone();
        cli_env.retain(|(k, _)| !launch.env.iter().any(|(l, _)| l == k));
        cli_env.extend(launch.env.clone());
        let log = log.to_path_buf();
        tokio::spawn(async move {
            let (program, args) = step
                .command
                .split_first()
                .with_context(|| format!("hook {} has no command", step.name))?;
            let out = tokio::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(cli_env)
                .current_dir("/")
                .kill_on_drop(true)
                .output()
                .await
                .with_context(|| format!("running {}", step.name))?;
            append_log(&log, &out.stdout);
            append_log(&log, &out.stderr);
            if !out.status.success() {
                bail!(
                    "{} failed ({}): {}",
                    step.name,
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        })
    });
    Ok((running, hook))
}
