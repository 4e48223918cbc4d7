//! Real processes for the cluster tests: `redis-server` on free ports with
//! their own data directories, and the `server` binary itself. Both are
//! killed when dropped. Never the shared Redis on 6379.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A port that was free a moment ago (bind :0, read it, release it).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A scratch directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "chat-it-{tag}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// TLS material made by `openssl` for a test: a CA and a server certificate
/// for 127.0.0.1 signed by it.
pub(crate) struct Tls {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Runs `openssl args…` in `dir`; answers its standard output, or fails
/// the test with its standard error.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Tls {
    pub(crate) fn make(dir: &Path) -> Tls {
        let run = |args: &[&str]| {
            openssl(dir, args);
        };
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write ext");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=chat-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        Tls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// A `redis-server` of this test: free port, own data directory, AOF on.
pub(crate) struct Redis {
    /// The `redis-server` binary.
    bin: PathBuf,
    pub(crate) port: u16,
    pub(crate) password: Option<String>,
    tls: Option<(u16, PathBuf, PathBuf, PathBuf)>,
    /// A node of a Redis Cluster ([`RedisCluster`]).
    cluster: bool,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Starts a plain (TCP, no password) Redis.
    pub(crate) async fn start() -> Redis {
        Redis::start_with(None, None).await
    }

    /// Starts Redis with a password and a TLS port (plain port too, for
    /// the test's own control connection).
    pub(crate) async fn start_tls(password: &str, tls: &Tls) -> Redis {
        Redis::start_with(
            Some(password.to_owned()),
            Some((
                free_port(),
                tls.cert.clone(),
                tls.key.clone(),
                tls.ca.clone(),
            )),
        )
        .await
    }

    /// Starts Redis 5.0.6, older than any server the engine relies on
    /// (`scripts/ensure.sh redis5` builds it; `make test` runs that).
    pub(crate) async fn start_5_0() -> Redis {
        let dir = std::env::var_os("REDIS5_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                    .join(".cache/chat/redis-5.0.6")
            });
        let bin = dir.join("redis-server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/ensure.sh redis5",
            bin.display()
        );
        let mut redis = Redis {
            bin,
            port: free_port(),
            password: None,
            tls: None,
            cluster: false,
            dir: TempDir::new("redis5"),
            child: None,
        };
        redis.spawn().await;
        redis
    }

    async fn start_with(
        password: Option<String>,
        tls: Option<(u16, PathBuf, PathBuf, PathBuf)>,
    ) -> Redis {
        let mut redis = Redis {
            bin: PathBuf::from("redis-server"),
            port: free_port(),
            password,
            tls,
            cluster: false,
            dir: TempDir::new("redis"),
            child: None,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        self.launch();
        self.wait_answering().await;
    }

    /// Starts it again without waiting until it answers (it may be
    /// loading a large data set meanwhile).
    pub(crate) fn restart_nowait(&mut self) {
        assert!(self.child.is_none(), "shut it down first");
        self.launch();
    }

    /// Waits until PING answers PONG (not LOADING).
    pub(crate) async fn wait_answering(&self) {
        let client = redis::Client::open(self.url()).expect("url");
        for _ in 0..2400 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        if self.cluster {
            // A failed master's replica is promoted 1.5 s after it stops
            // answering; the other masters serve their slots meanwhile.
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "1500"])
            .args(["--cluster-require-full-coverage", "no"]);
        }
        if let Some((port, cert, key, ca)) = &self.tls {
            cmd.arg("--tls-port")
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]);
            if self.cluster {
                cmd.args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
                if let Some(pw) = &self.password {
                    // Replicas authenticate to their masters.
                    cmd.args(["--masterauth", pw]);
                }
            }
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if self.bin == Path::new("redis-server") {
            // DEBUG POPULATE makes the large data sets of the LOADING tests.
            cmd.args(["--enable-debug-command", "local"]);
        }
        self.child = Some(cmd.spawn().expect("redis-server starts (is it installed?)"));
    }

    /// The plain-TCP URL.
    pub(crate) fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The TLS URL (`rediss://`), for a Redis started with [`Redis::start_tls`].
    pub(crate) fn tls_url(&self) -> String {
        let (port, ..) = self.tls.as_ref().expect("started with TLS");
        let pw = self.password.as_deref().unwrap_or_default();
        format!("rediss://:{pw}@127.0.0.1:{port}")
    }

    /// A command connection for the test itself.
    pub(crate) async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("test connection to redis")
    }

    /// Shuts Redis down cleanly (the AOF is complete) and waits for the exit.
    pub(crate) async fn shutdown(&mut self) {
        let mut conn = self.conn().await;
        let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query_async(&mut conn).await;
        if let Some(mut child) = self.child.take() {
            tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .expect("redis-server exits after SHUTDOWN")
                .expect("wait");
        }
    }

    /// Kills Redis with SIGKILL (nothing saved beyond what the AOF holds)
    /// and waits for the exit.
    pub(crate) async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// A backup of the data as it is now: `SAVE`, then a copy of the data
    /// directory (the AOF is fsynced on every write, so the copy is whole).
    pub(crate) async fn snapshot(&self) -> TempDir {
        let mut conn = self.conn().await;
        let _: () = redis::cmd("SAVE")
            .query_async(&mut conn)
            .await
            .expect("SAVE");
        let copy = TempDir::new("redis-snapshot");
        copy_dir(self.dir.path(), copy.path());
        copy
    }

    /// Replaces the data directory with `snapshot` (while Redis is down):
    /// the next start is a restore from that backup.
    pub(crate) fn restore(&self, snapshot: &TempDir) {
        self.wipe();
        copy_dir(snapshot.path(), self.dir.path());
    }

    /// Starts it again on the same port and data directory.
    pub(crate) async fn restart(&mut self) {
        assert!(self.child.is_none(), "shut it down first");
        self.spawn().await;
    }

    /// Deletes the data directory's contents (while Redis is down): the
    /// next start begins empty, as a wiped or replaced store would.
    pub(crate) fn wipe(&self) {
        assert!(self.child.is_none(), "shut it down first");
        for entry in std::fs::read_dir(self.dir.path()).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).expect("remove");
            } else {
                std::fs::remove_file(path).expect("remove");
            }
        }
    }
}

/// A port that is free with its Redis Cluster bus port (+10000).
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A local Redis Cluster of this test (`redis-cli --cluster create`):
/// masters with replicas, each node on a free port with its own directory.
pub(crate) struct RedisCluster {
    pub(crate) nodes: Vec<Redis>,
}

/// One line of `CLUSTER SLOTS`: a slot range, its master's port and id.
#[derive(Debug, Clone)]
pub(crate) struct SlotRange {
    pub(crate) start: u16,
    pub(crate) end: u16,
    pub(crate) master: u16,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits
    /// until every node reports `cluster_state:ok` and knows every other.
    pub(crate) async fn start(masters: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with(masters, replicas, None).await
    }

    /// Like [`RedisCluster::start`], every node also on a TLS port (its
    /// cluster bus and replication over TLS too, `tls-cluster yes`) with
    /// `password`; the plain ports stay for the test's own connections.
    pub(crate) async fn start_tls(
        masters: usize,
        replicas: usize,
        password: &str,
        tls: &Tls,
    ) -> RedisCluster {
        RedisCluster::start_with(masters, replicas, Some((password, tls))).await
    }

    async fn start_with(
        masters: usize,
        replicas: usize,
        tls: Option<(&str, &Tls)>,
    ) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let mut node = Redis {
                bin: PathBuf::from("redis-server"),
                port: free_cluster_port(),
                password: tls.map(|(pw, _)| pw.to_owned()),
                tls: tls.map(|(_, t)| (free_port(), t.cert.clone(), t.key.clone(), t.ca.clone())),
                cluster: true,
                dir: TempDir::new("cluster"),
                child: None,
            };
            node.spawn().await;
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = Command::new("redis-cli");
        if let Some((pw, _)) = tls {
            create.args(["-a", pw, "--no-auth-warning"]);
        }
        let out = create
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok().await;
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok`, agrees on
    /// the slot map, and every replica is in sync with its master.
    pub(crate) async fn wait_ok(&self) {
        for _ in 0..400 {
            let mut ok = true;
            let mut maps = Vec::new();
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let mut conn = node.conn().await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
                let repl: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if repl.contains("role:slave") {
                    ok &= repl.contains("master_link_status:up");
                }
                maps.push(format!("{:?}", slot_ranges(&mut conn).await));
            }
            ok &= maps.windows(2).all(|w| w[0] == w[1]);
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Redis Cluster did not settle");
    }

    /// Seed URLs of every node, comma-separated (`--redis-url`).
    pub(crate) fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The TLS seed URLs (`rediss://`) of a cluster from [`RedisCluster::start_tls`].
    pub(crate) fn tls_urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.tls_url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node on `port`.
    pub(crate) fn node(&mut self, port: u16) -> &mut Redis {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// A running node's connection.
    pub(crate) async fn any_conn(&self) -> redis::aio::MultiplexedConnection {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node")
            .conn()
            .await
    }

    /// The slot map as a running node sees it.
    pub(crate) async fn slots(&self) -> Vec<SlotRange> {
        slot_ranges(&mut self.any_conn().await).await
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub(crate) async fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut self.any_conn().await)
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// The port of the master that owns `slot`.
    pub(crate) async fn owner(&self, slot: u16) -> u16 {
        self.slots()
            .await
            .iter()
            .find(|r| r.start <= slot && slot <= r.end)
            .expect("every slot is served")
            .master
    }

    /// Moves `slot` to the master on port `to`, keys and all, as
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, `MIGRATE`
    /// in batches, then `SETSLOT NODE` on both and every other master.
    pub(crate) async fn move_slot(&self, slot: u16, to: u16) {
        let from = self.owner(slot).await;
        let conn_of = |port: u16| {
            let node = self.nodes.iter().find(|n| n.port == port).expect("node");
            node.conn()
        };
        let (mut src, mut dst) = (conn_of(from).await, conn_of(to).await);
        let id = |mut c: redis::aio::MultiplexedConnection| async move {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query_async::<String>(&mut c)
                .await
                .expect("CLUSTER MYID")
        };
        let (src_id, dst_id) = (id(src.clone()).await, id(dst.clone()).await);
        let setslot = |c: &mut redis::aio::MultiplexedConnection, how: &str, node: &str| {
            let mut c = c.clone();
            let (how, node) = (how.to_owned(), node.to_owned());
            async move {
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(how)
                    .arg(node)
                    .query_async::<()>(&mut c)
                    .await
                    .expect("CLUSTER SETSLOT")
            }
        };
        setslot(&mut dst, "IMPORTING", &src_id).await;
        setslot(&mut src, "MIGRATING", &dst_id).await;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut src)
                .await
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut src)
                .await
                .expect("MIGRATE");
        }
        setslot(&mut dst, "NODE", &dst_id).await;
        setslot(&mut src, "NODE", &dst_id).await;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            if node.port != from && node.port != to {
                let mut c = node.conn().await;
                // A replica answers an error: it learns from its master.
                let _: redis::RedisResult<()> = redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&dst_id)
                    .query_async(&mut c)
                    .await;
            }
        }
    }
}

/// `CLUSTER SLOTS` as ranges with their master's port, sorted.
async fn slot_ranges(conn: &mut redis::aio::MultiplexedConnection) -> Vec<SlotRange> {
    let raw: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let mut ranges: Vec<SlotRange> = raw
        .into_iter()
        .filter_map(|v| {
            let redis::Value::Array(items) = v else {
                return None;
            };
            let int = |v: &redis::Value| match v {
                redis::Value::Int(n) => Some(*n),
                _ => None,
            };
            let redis::Value::Array(master) = items.get(2)? else {
                return None;
            };
            Some(SlotRange {
                start: int(items.first()?)? as u16,
                end: int(items.get(1)?)? as u16,
                master: int(master.get(1)?)? as u16,
            })
        })
        .collect();
    ranges.sort_by_key(|r| r.start);
    ranges
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The `server` binary, started as a real process.
pub(crate) struct ServerProc {
    pub(crate) addr: SocketAddr,
    child: Child,
    /// Every log line the server wrote after it started listening.
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProc {
    /// Starts an instance on a free port with `args` after the common ones.
    pub(crate) async fn start(instance: &str, redis_url: &str, args: &[&str]) -> ServerProc {
        let server = Command::new(env!("CARGO_BIN_EXE_server"));
        ServerProc::launch(server, instance, redis_url, args).await
    }

    /// Like [`ServerProc::start`], with the process's clock shifted by
    /// `offset` (`+40s`, `-1m`) through Debian's libfaketime, preloaded in
    /// the server process itself (the `faketime` command forks, and
    /// killing it would leave the server running).
    pub(crate) async fn start_skewed(
        instance: &str,
        redis_url: &str,
        args: &[&str],
        offset: &str,
    ) -> ServerProc {
        let lib = std::fs::read_dir("/usr/lib")
            .expect("/usr/lib")
            .filter_map(|e| Some(e.ok()?.path().join("faketime/libfaketime.so.1")))
            .find(|p| p.exists())
            .expect("libfaketime (Debian package faketime; scripts/ensure.sh faketime)");
        let mut server = Command::new(env!("CARGO_BIN_EXE_server"));
        server.env("LD_PRELOAD", lib).env("FAKETIME", offset);
        ServerProc::launch(server, instance, redis_url, args).await
    }

    /// Runs an instance that is expected to refuse to start: returns
    /// whether it exited successfully, and what it wrote.
    pub(crate) async fn run_to_exit(
        instance: &str,
        redis_url: &str,
        args: &[&str],
    ) -> (bool, String) {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            Command::new(env!("CARGO_BIN_EXE_server"))
                .args(["--bind", "127.0.0.1", "--port", "0", "--log", "info"])
                .args(["--instance-id", instance, "--redis-url", redis_url])
                .args(["--session-secret", "integration-test-secret-0123456789"])
                .args(["--presence-grace-ms", "0"])
                .args(args)
                .env_remove("RUST_LOG")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the server exits by itself")
        .expect("server binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    async fn launch(
        mut command: Command,
        instance: &str,
        redis_url: &str,
        args: &[&str],
    ) -> ServerProc {
        // Presence changes at once unless a test sets the grace.
        if !args.contains(&"--presence-grace-ms") {
            command.args(["--presence-grace-ms", "0"]);
        }
        let mut child = command
            .args(["--bind", "127.0.0.1", "--port", "0", "--log", "info"])
            .args(["--instance-id", instance, "--redis-url", redis_url])
            .args(["--session-secret", "integration-test-secret-0123456789"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("server binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // What the server logs before `listening` (a readiness probe that
        // already failed, say) is kept too.
        let (addr, first) = tokio::time::timeout(Duration::from_secs(20), async {
            let mut early = Vec::new();
            while let Some(line) = lines.next_line().await.expect("read server log") {
                if let Some(addr) = listening_addr(&line) {
                    early.push(line);
                    return (addr, early);
                }
                early.push(line);
            }
            panic!("server {instance} exited before listening");
        })
        .await
        .unwrap_or_else(|_| panic!("server {instance} did not start listening"));
        // Keep draining the log so the server never blocks on a full pipe;
        // it shows in the output of a failing test.
        let tag = instance.to_owned();
        let log = Arc::new(Mutex::new(first));
        let kept = log.clone();
        tokio::spawn(async move {
            let mut rest = lines.into_inner();
            let mut buf = Vec::new();
            while let Ok(n) =
                tokio::io::AsyncBufReadExt::read_until(&mut rest, b'\n', &mut buf).await
            {
                if n == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(&buf);
                eprint!("[{tag}] {line}");
                kept.lock().unwrap().push(line.into_owned());
                buf.clear();
            }
        });
        ServerProc { addr, child, log }
    }

    /// Every log line so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether a log line so far contains every one of `words`.
    pub(crate) fn logged(&self, words: &[&str]) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| words.iter().all(|w| line.contains(w)))
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGTERM, as an orchestrator stops an instance, and waits (bounded)
    /// for the process to exit after its drain and shutdown.
    pub(crate) async fn terminate(&mut self) {
        let pid = self.child.id().expect("the server runs");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server exits after SIGTERM")
            .expect("wait");
    }

    /// `kill -9`: no goodbye to anyone.
    pub(crate) async fn kill9(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }
}

/// The address of the server's `listening` log line, as text
/// (`… listening addr=…`) or as JSON (`--log-format json`).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if line.starts_with('{') {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        if event["message"] != "listening" {
            return None;
        }
        return event["addr"].as_str()?.parse().ok();
    }
    if !line.contains("listening") {
        return None;
    }
    line.split("addr=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A TCP proxy of the test's own between servers and Redis, standing for
/// a DNS name, a cloud proxy or a NAT. [`Proxy::switch`] moves it to
/// another upstream (new connections go there; open ones stay where they
/// were, as after a DNS change or a failover behind a proxy);
/// [`Proxy::blackhole`] makes every open connection stop forwarding in both
/// directions without closing it (a NAT that forgot the flow: no RST,
/// nothing arrives), while new connections work.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    upstream: Arc<std::sync::atomic::AtomicU16>,
    /// Connections accepted before the latest `blackhole` stop forwarding.
    generation: Arc<std::sync::atomic::AtomicU64>,
    tasks: Arc<Mutex<tokio::task::JoinSet<()>>>,
}

impl Proxy {
    pub(crate) async fn start(upstream: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Proxy {
            port,
            upstream: Arc::new(upstream.into()),
            generation: Arc::new(0.into()),
            tasks: Arc::new(Mutex::new(tokio::task::JoinSet::new())),
        };
        let (up, generation, tasks) = (
            proxy.upstream.clone(),
            proxy.generation.clone(),
            proxy.tasks.clone(),
        );
        proxy.tasks.lock().unwrap().spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let to = up.load(Ordering::SeqCst);
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let mine = generation.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let mut set = tasks.lock().unwrap();
                set.spawn(pump(cr, sw, generation.clone(), mine));
                set.spawn(pump(sr, cw, generation.clone(), mine));
            }
        });
        proxy
    }

    /// New connections go to `upstream` from now on.
    pub(crate) fn switch(&self, upstream: u16) {
        self.upstream
            .store(upstream, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every open connection stops forwarding, in both directions, and
    /// stays open.
    pub(crate) fn blackhole(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

/// Copies `from` to `to` until EOF; once the proxy's generation moved past
/// `mine`, holds both ends open and forwards nothing more.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    generation: Arc<std::sync::atomic::AtomicU64>,
    mine: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if generation.load(std::sync::atomic::Ordering::SeqCst) != mine {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A PostgreSQL server of the test's own: Debian's `initdb` into a scratch
/// directory, `postgres` on a free loopback port with its socket in that
/// directory, trust authentication for the user `chat`. Never the
/// machine's service. Run as the `postgres` system user when the tests
/// run as root (PostgreSQL refuses root), with `setpriv`, which execs: the
/// child is `postgres` itself, killed when dropped.
pub(crate) struct Postgres {
    pub(crate) port: u16,
    _dir: TempDir,
    _child: Child,
}

impl Postgres {
    /// The newest `/usr/lib/postgresql/<major>/bin` (`scripts/ensure.sh
    /// postgresql` installs Debian's package when it is missing).
    fn bin_dir() -> PathBuf {
        let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("/usr/lib/postgresql: run scripts/ensure.sh postgresql")
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, bin)| bin.join("initdb").exists())
            .collect();
        majors.sort();
        majors
            .pop()
            .expect("no PostgreSQL with initdb under /usr/lib/postgresql")
            .1
    }

    /// `command` as the user that may run PostgreSQL: this one, or
    /// `postgres` when this one is root.
    fn as_owner(program: &Path) -> Command {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        if root {
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    pub(crate) async fn start() -> Postgres {
        let bin = Postgres::bin_dir();
        let dir = TempDir::new("postgres");
        let data = dir.path().join("data");
        // As root, the directory goes to `postgres`; otherwise it is ours
        // already and chown fails harmlessly.
        let _ = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status();
        let out = Postgres::as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "chat", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .await
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = Postgres::as_owner(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("postgres starts");
        let postgres = Postgres {
            port,
            _dir: dir,
            _child: child,
        };
        postgres.wait_ready().await;
        postgres
    }

    /// A URL of the `postgres` database as `chat`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://chat@127.0.0.1:{}/postgres", self.port)
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(Postgres::bin_dir().join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "chat",
                ])
                .stdout(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "postgres on {} not ready in 30 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
