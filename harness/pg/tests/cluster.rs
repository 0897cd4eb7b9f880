//! The embedded cluster starts, answers, and leaves nothing behind. These tests need the
//! PostgreSQL server binaries; without them they fail and say how to install them.

use std::time::{Duration, Instant};

use racelab_pg::Cluster;

fn embedded() -> Cluster {
    match Cluster::embedded() {
        Ok(c) => c,
        Err(e) => panic!("cannot start an embedded PostgreSQL cluster: {e}"),
    }
}

fn alive(pid: u32) -> bool {
    // A zombie would still answer kill(0); the cluster reaps its child, so this is exact.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn query_one(config: &tokio_postgres::Config, sql: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        let rows = client.simple_query(sql).await.expect("query");
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
                _ => None,
            })
            .expect("a row")
    })
}

#[test]
fn embedded_cluster_starts_and_stops_leaving_nothing() {
    let t = Instant::now();
    let cluster = embedded();
    let started = t.elapsed();
    let pid = cluster.server_pid().expect("embedded has a pid");
    let dir = cluster.dir().expect("embedded has a dir").to_path_buf();
    assert!(alive(pid));
    assert!(dir.join("data").is_dir());
    let version = query_one(&cluster.config(), "SHOW server_version_num");
    assert!(version.parse::<u32>().unwrap() >= 150000, "server {version}");
    assert_eq!(query_one(&cluster.config(), "SHOW fsync"), "off");
    assert_eq!(query_one(&cluster.config(), "SHOW listen_addresses"), "");
    let t = Instant::now();
    drop(cluster);
    eprintln!("cluster start {started:?}, stop {:?}", t.elapsed());
    assert!(!alive(pid), "server {pid} still runs");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn external_cluster_makes_and_drops_its_own_database() {
    let host = embedded();
    let dir = host.dir().unwrap().display().to_string();
    let url = format!("host={dir} port=5432 user=racelab dbname=postgres");
    let ext = Cluster::external(&url).unwrap_or_else(|e| panic!("{e}"));
    let name = ext.config().get_dbname().unwrap().to_string();
    assert!(name.starts_with("racelab_"), "{name}");
    assert_eq!(query_one(&ext.config(), "SELECT current_database()"), name);
    drop(ext);
    let sql = format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'");
    assert_eq!(query_one(&host.config(), &sql), "0");
}

#[test]
fn unreachable_and_bad_credentials_are_clear_errors() {
    let e = Cluster::external("host=/nonexistent-racelab port=5432 user=x connect_timeout=2").err().expect("fails");
    let msg = e.to_string();
    assert!(msg.contains("cannot reach PostgreSQL at x@/nonexistent-racelab:5432"), "{msg}");

    let host = embedded();
    let dir = host.dir().unwrap().display().to_string();
    let e = Cluster::external(&format!("host={dir} port=5432 user=nosuchrole")).err().expect("fails");
    let msg = e.to_string();
    assert!(msg.contains("nosuchrole") && msg.contains("28000"), "{msg}");
}

#[test]
fn server_dies_with_its_parent_thread_gone() {
    // Spawned from a short-lived thread, the server must outlive that thread.
    let cluster = std::thread::spawn(embedded).join().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(alive(cluster.server_pid().unwrap()), "the server died with the thread that started it");
    assert_eq!(query_one(&cluster.config(), "SELECT 1"), "1");
}

/// The helper's `READY <pid> <dir>` (libtest prints it after the test's name, on one line).
fn ready_line(out: impl std::io::BufRead) -> (u32, std::path::PathBuf) {
    let line =
        out.lines().map_while(Result::ok).find(|l| l.contains("READY ")).expect("the helper reports its cluster");
    let mut parts = line[line.find("READY ").unwrap()..].split_whitespace().skip(1);
    let pid = parts.next().unwrap().parse().unwrap();
    (pid, std::path::PathBuf::from(parts.next().unwrap()))
}

/// Run in a child process by `interrupt_stops_the_cluster_and_removes_its_directory`.
#[test]
#[ignore = "helper: run as a child process by interrupt_stops_the_cluster_and_removes_its_directory"]
fn helper_cluster_waiting_for_a_signal() {
    racelab_pg::install_interrupt_cleanup().unwrap();
    let cluster = embedded();
    println!("READY {} {}", cluster.server_pid().unwrap(), cluster.dir().unwrap().display());
    std::thread::sleep(Duration::from_secs(30));
    panic!("no signal came");
}

#[test]
fn interrupt_stops_the_cluster_and_removes_its_directory() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_cluster_waiting_for_a_signal", "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (pid, dir) = ready_line(out);
    assert!(alive(pid) && dir.exists());
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(pid), "server {pid} survived the interrupt");
    assert!(!dir.exists(), "{} survived the interrupt", dir.display());
}

#[test]
fn sigkill_of_racelab_still_stops_the_server() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_cluster_waiting_for_a_signal", "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (pid, dir) = ready_line(out);
    child.kill().unwrap();
    child.wait().unwrap();
    // The server's parent is gone; init reaps it once it exits.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(pid), "server {pid} survived SIGKILL of its parent");
    // SIGKILL leaves the directory; remove it here, unless another test's cluster start has
    // already removed it as stale.
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "removing {}: {e}", dir.display());
    }
}

/// Can this process give a child namespaces of its own, with its own `/dev/shm`? Root in a
/// container without `CAP_SYS_ADMIN` cannot, nor where a security policy forbids mounts.
fn namespaces_allowed() -> bool {
    use std::os::unix::process::CommandExt;
    let (none, root, tmpfs, shm) = (c"none", c"/", c"tmpfs", c"/dev/shm");
    let mut probe = std::process::Command::new("true");
    // SAFETY: system calls only, between fork and exec, on static strings.
    unsafe {
        probe.pre_exec(move || {
            let ok = libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC) == 0
                && libc::mount(
                    none.as_ptr(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                && libc::mount(tmpfs.as_ptr(), shm.as_ptr(), tmpfs.as_ptr(), 0, std::ptr::null()) == 0;
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    probe.status().is_ok_and(|s| s.success())
}

/// `PostgreSQL.*` segment names under `shm`.
fn segments(shm: &std::path::Path) -> Vec<String> {
    let names = std::fs::read_dir(shm).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    names.filter(|n| n.starts_with("PostgreSQL.")).collect()
}

/// A killed PostgreSQL process leaves its POSIX shared memory behind, named by a random
/// number that no later run could attribute. As root, the server's segments live on a
/// `/dev/shm` of its own, which dies with it.
#[test]
fn the_servers_shared_memory_is_its_own() {
    let cluster = embedded();
    let pid = cluster.server_pid().unwrap();
    let private = racelab_pg::sandbox::is_private(pid).expect("the server runs");
    if unsafe { libc::geteuid() } != 0 || !namespaces_allowed() {
        assert!(!private, "namespaces were not allowed, yet the server has its own");
        eprintln!("not root, or no CAP_SYS_ADMIN: the server shares racelab's shared memory");
        return;
    }
    assert!(private, "the server {pid} shares racelab's /dev/shm or IPC namespace");
    let theirs = segments(&std::path::Path::new(&format!("/proc/{pid}/root")).join("dev/shm"));
    assert!(!theirs.is_empty(), "the server keeps its dynamic shared memory control segment in /dev/shm");
    let ours = segments(std::path::Path::new("/dev/shm"));
    assert!(theirs.iter().all(|s| !ours.contains(s)), "{theirs:?} visible in racelab's /dev/shm: {ours:?}");
}
