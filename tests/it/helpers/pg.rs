//! A real PostgreSQL server for the tests (design §8): one per test process, started on
//! loopback from Debian's binaries (`/usr/lib/postgresql/*/bin`) in a temp dir, and gone with
//! the process (it gets SIGQUIT, PostgreSQL's immediate shutdown, when the process exits).
//!
//! Outside CI, missing binaries skip the PostgreSQL tests with a loud message; with `CI=true`
//! they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Set to `postgres` to run the store-parameterised tests against PostgreSQL.
pub const STORE_ENV: &str = "POLLHOOK_TEST_STORE";

/// Whether this process runs the suite on PostgreSQL.
pub fn enabled() -> bool {
    std::env::var(STORE_ENV).is_ok_and(|v| v == "postgres")
}

/// How many instances each test daemon runs on PostgreSQL (`POLLHOOK_TEST_INSTANCES`, 1).
pub fn instances() -> usize {
    match enabled() {
        true => std::env::var("POLLHOOK_TEST_INSTANCES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        false => 1,
    }
}

/// The running server.
pub struct Server {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The postmaster's pid.
    pub pid: u32,
    bin: PathBuf,
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();

/// The server, started on first use; `None` (after a loud message) when PostgreSQL is not
/// installed outside CI.
pub fn server() -> Option<&'static Server> {
    SERVER.get_or_init(start).as_ref()
}

/// Whether the PostgreSQL binaries are installed (a loud skip message when not; with `CI=true`
/// their absence fails).
pub fn installed(test: &str) -> bool {
    if bin_dir().is_some() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but PostgreSQL is not installed: .ci/run must apt-get install postgresql");
    }
    eprintln!(
        "\n*** SKIPPED {test}: PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (apt install postgresql) ***\n"
    );
    false
}

/// The server, or a skip: `None` means "return from the test now".
pub fn require(test: &str) -> Option<&'static Server> {
    let s = server();
    if s.is_none() {
        eprintln!(
            "\n*** SKIPPED {test}: PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (apt install postgresql) ***\n"
        );
    }
    s
}

fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// uid and gid to run PostgreSQL as: it refuses to run as root.
fn user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u").unwrap_or(65534), id("-g").unwrap_or(65534)))
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Removes data dirs left by test processes that are gone.
fn sweep(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("pollhook-test-pg-")
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn start() -> Option<Server> {
    let Some(bin) = bin_dir() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true but PostgreSQL is not installed: .ci/run must apt-get install postgresql"
            );
        }
        return None;
    };
    let root = std::env::temp_dir();
    sweep(&root);
    let dir = root.join(format!("pollhook-test-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create PostgreSQL dir");
    let user = user();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown PostgreSQL dir");
    }
    let data = dir.join("data");
    let status = as_user(
        Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "pollhook", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        user,
    )
    .output()
    .expect("run initdb");
    assert!(
        status.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let port = free_port();
    // A thread of its own starts the server and never ends: the server's parent-death signal
    // fires when the spawning thread exits, which must be the process exiting.
    let (tx, rx) = std::sync::mpsc::channel();
    let (bin2, dir2) = (bin.clone(), dir.clone());
    std::thread::Builder::new()
        .name("postgres-keeper".into())
        .spawn(move || {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new(bin2.join("postgres"));
            cmd.arg("-D")
                .arg(dir2.join("data"))
                .args(["-p", &port.to_string(), "-k"])
                .arg(&dir2)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=400",
                    "-c",
                    "shared_buffers=64MB",
                ])
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(dir2.join("server.log"))
                        .map(Stdio::from)
                        .unwrap_or(Stdio::null()),
                );
            as_user(&mut cmd, user);
            // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag of the calling process.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            let _ = tx.send(child.map(|c| c.id()).map_err(|e| e.to_string()));
            loop {
                std::thread::park();
            }
        })
        .expect("spawn keeper thread");
    let pid = rx.recv().expect("keeper answers").expect("start postgres");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "pollhook",
                "-q",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL (pid {pid}) did not become ready in 60 s; see {}",
            dir.join("server.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "PostgreSQL for tests: pid {pid}, port {port}, dir {}",
        dir.display()
    );
    Some(Server { port, pid, bin })
}

impl Server {
    /// Creates an empty database; returns its URL.
    pub fn database(&self) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "pollhook",
                &name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://pollhook@127.0.0.1:{}/{name}", self.port)
    }
}

/// The database of a test dir (created on first use, the same for a restart in that dir).
#[allow(dead_code)] // not used by the bench that includes this file
pub fn database_for(dir: &Path) -> String {
    let file = dir.join("pg-database-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return url;
    }
    let url = server().expect("PostgreSQL server").database();
    std::fs::write(&file, &url).expect("remember the database");
    url
}

/// `yaml` with its redb `state:` line replaced by a `store:` on the dir's database.
pub fn rewrite(yaml: &str, dir: &Path, lease: &str, instance: &str) -> String {
    let url = database_for(dir);
    let store = format!("store:\n  postgres: {url}\n  lease: {lease}\ninstance: {instance}\n");
    let mut out = String::new();
    let mut replaced = false;
    for line in yaml.lines() {
        if !replaced && line.starts_with("state:") {
            out.push_str(&store);
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out = format!("{store}{out}");
    }
    out
}
