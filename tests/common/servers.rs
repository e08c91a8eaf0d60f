//! Storage servers for the backend tests, each started on 127.0.0.1 with a free port in a
//! temporary folder and stopped on drop. Nothing is installed here: `.ci/run` installs the
//! programs, and a missing one fails the test loudly (never a skip).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The path of a program the CI script installs, or a panic that says how to get it.
pub fn require(program: &str, candidates: &[&str], how: &str) -> PathBuf {
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_file() {
            return p;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(program);
            if p.is_file() {
                return p;
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cargo/bin").join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{program} is not installed; the backend tests need it ({how}; `bash .ci/run` installs it)"
    );
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 30 s");
}

/// A running server process, killed on drop (none for a local folder).
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// `--repo` URL of a fresh repository location on this server.
    pub url: String,
    /// Environment the client needs (credentials).
    pub env: Vec<(String, String)>,
    /// `-o` options the client needs.
    pub options: Vec<String>,
}

/// ssh master processes (`ssh -M ... -p PORT`, started by OpenDAL's sftp service through
/// openssh multiplexing) connected to a test server's port.
pub fn ssh_masters(port: u16) -> Vec<u32> {
    let port = port.to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_ssh = args.first().is_some_and(|a| a.ends_with(b"ssh"));
        let master = args.iter().any(|a| *a == b"-M");
        let on_port = args
            .windows(2)
            .any(|w| w[0] == b"-p" && w[1] == port.as_bytes());
        if is_ssh && master && on_port {
            out.push(pid);
        }
    }
    out
}

impl Drop for Server {
    fn drop(&mut self) {
        // An SFTP server's clients must have closed their ssh sessions: a master left
        // running would outlive the test suite (and, on a backup host, every daily run).
        // A closed session's master exits a moment after its client: wait up to 10 s for
        // that before calling it leaked (a leaked one never exits).
        let mut leaked = Vec::new();
        if self.url.starts_with("sftp://") {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                leaked = ssh_masters(self.port);
                if leaked.is_empty() || std::time::Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        for pid in &leaked {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !leaked.is_empty() && !std::thread::panicking() {
            panic!("ssh master processes outlived their ocvault commands: {leaked:?}");
        }
    }
}

impl Server {
    /// A repository in a local folder, driven the same way as the servers.
    pub fn local(dir: tempfile::TempDir) -> Server {
        let url = dir.path().join("repo").display().to_string();
        Server {
            child: None,
            port: 0,
            dir,
            url,
            env: vec![],
            options: vec![],
        }
    }

    /// `ocvault` with this server's repository, credentials and the test password.
    pub fn cmd(&self, password: &str) -> assert_cmd::Command {
        let mut c = super::ocvault();
        c.arg("--repo")
            .arg(&self.url)
            .env("OCVAULT_PASSWORD", password);
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    super::env::scratch_dir(prefix)
}

/// s3s-fs: an S3 server over a folder; the bucket is a folder under its root.
pub fn s3() -> Server {
    s3_with_credentials("ocvaulttestkey", "ocvault-test-secret-0123456789")
}

/// [`s3`] accepting only this access key and secret (another account's server).
pub fn s3_with_credentials(key: &str, secret: &str) -> Server {
    let bin = require(
        "s3s-fs",
        &[],
        "cargo install s3s-fs@0.14.1 --features binary --locked",
    );
    let dir = tempdir("ocvault-s3-");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bucket")).unwrap();
    let port = free_port();
    let mut child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", key, "--secret-key", secret])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    wait_for_port(port, &mut child, "s3s-fs");
    Server {
        child: Some(child),
        port,
        dir,
        url: "s3://bucket/repo".into(),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), key.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), secret.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ],
        options: vec![format!("s3.endpoint=http://127.0.0.1:{port}")],
    }
}

/// A private sshd with its own host and client keys, serving SFTP from a folder.
pub fn sftp() -> Server {
    let sshd = require(
        "sshd",
        &["/usr/sbin/sshd"],
        "apt-get install openssh-server",
    );
    let keygen = require("ssh-keygen", &[], "apt-get install openssh-client");
    require("ssh", &[], "apt-get install openssh-client");
    let dir = tempdir("ocvault-sftp-");
    let d = dir.path();
    for name in ["host_key", "client_key"] {
        let st = Command::new(&keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join(name))
            .status()
            .unwrap();
        assert!(st.success(), "ssh-keygen failed");
    }
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    std::fs::create_dir_all(d.join("data")).unwrap();
    // sshd insists on its privilege-separation folder.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = free_port();
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into());
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
         PidFile {pid}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
         Subsystem sftp internal-sftp\nMaxSessions 64\nMaxStartups 64\n",
        hk = d.join("host_key").display(),
        ak = d.join("authorized_keys").display(),
        pid = d.join("sshd.pid").display(),
    );
    std::fs::write(d.join("sshd_config"), config).unwrap();
    let mut child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sshd");
    wait_for_port(port, &mut child, "sshd");
    let url = format!(
        "sftp://{user}@127.0.0.1:{port}{}/repo",
        d.join("data").display()
    );
    let options = vec![
        format!("sftp.key={}", d.join("client_key").display()),
        "sftp.known_hosts=accept".into(),
    ];
    Server {
        child: Some(child),
        port,
        dir,
        url,
        env: vec![],
        options,
    }
}

/// `rclone serve webdav` over a folder, with a user and password.
pub fn webdav() -> Server {
    let rclone = require("rclone", &[], "apt-get install rclone");
    let dir = tempdir("ocvault-webdav-");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let port = free_port();
    let (user, pass) = ("ocvault", "webdav-test-password-42");
    let mut child = Command::new(rclone)
        .args(["serve", "webdav"])
        .arg(&root)
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--config",
            "/dev/null",
        ])
        // Credentials through the environment, as ocvault takes them.
        .env("RCLONE_USER", user)
        .env("RCLONE_PASS", pass)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rclone");
    wait_for_port(port, &mut child, "rclone serve webdav");
    Server {
        child: Some(child),
        port,
        dir,
        url: format!("webdav://127.0.0.1:{port}/repo"),
        env: vec![
            ("OCVAULT_WEBDAV_USER".into(), user.into()),
            ("OCVAULT_WEBDAV_PASSWORD".into(), pass.into()),
        ],
        options: vec![],
    }
}

/// moto in server mode: an in-memory S3 (and IAM) that implements Object Lock (it refuses
/// to delete a locked version) and archive storage classes (`InvalidObjectState` on a GLACIER
/// object until it is restored; moto finishes a restore at once). Buckets are made through
/// [`Moto::create_bucket`] and friends; [`Moto::repo`] gives a [`Server`] for ocvault.
/// Its process group is killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Holds moto's log (`moto.log`: its request log, see [`Moto::requests`]).
    pub dir: tempfile::TempDir,
    /// What ocvault and the admin helper sign with: any key while moto's authentication is
    /// off, the admin user's after [`Moto::enforce_iam`].
    credentials: super::s3_admin::S3Credentials,
}

/// Starts `moto_server` on a free port of 127.0.0.1 and waits until it answers.
pub fn moto() -> Moto {
    use std::os::unix::process::CommandExt;
    // Installed with moto[server]; the tests run it through moto_server.py (the same
    // server with its signature check fixed for authenticated listings, see there).
    require("moto_server", &[], "pip install 'moto[server]==5.2.1'");
    let python = require("python3", &[], "apt-get install python3");
    let wrapper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/common/moto_server.py");
    let dir = tempdir("ocvault-moto-");
    let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
    let port = free_port();
    let mut child = Command::new(python)
        .arg(wrapper)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // moto reads no credentials, but boto3 inside it must not pick up a real profile.
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Its own process group, so that drop kills whatever it started too.
        .process_group(0)
        .spawn()
        .expect("start moto_server");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "moto_server exited early ({status}): {}",
                std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on 127.0.0.1:{port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Moto {
        child,
        port,
        endpoint: format!("http://127.0.0.1:{port}"),
        dir,
        credentials: super::s3_admin::S3Credentials::test_default(),
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the process group, which is moto's own.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// One request in moto's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query, as sent (`/BUCKET/KEY?QUERY`).
    pub path: String,
    pub status: u16,
}

impl Moto {
    /// Every request moto has answered so far, oldest first, from its log (werkzeug's lines
    /// `... "GET /bucket/key HTTP/1.1" 200 -`). Slice by the length at a mark to count the
    /// requests of one command.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let text = std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once(" \"")?;
                let (request, after) = rest.split_once("\" ")?;
                let mut parts = request.split(' ');
                let method = parts.next()?.to_string();
                let path = parts.next()?.to_string();
                let status = after.split(' ').next()?.parse().ok()?;
                Some(LoggedRequest {
                    method,
                    path,
                    status,
                })
            })
            .collect()
    }

    /// The admin helper for `bucket`, signing as the admin (see [`Moto::enforce_iam`]).
    pub fn admin(&self, bucket: &str) -> super::s3_admin::S3Admin {
        self.admin_as(bucket, &self.credentials)
    }

    /// The admin helper for `bucket` signing with `credentials` (e.g. the backup host's).
    pub fn admin_as(
        &self,
        bucket: &str,
        credentials: &super::s3_admin::S3Credentials,
    ) -> super::s3_admin::S3Admin {
        super::s3_admin::S3Admin {
            endpoint: self.endpoint.clone(),
            bucket: bucket.into(),
            credentials: credentials.clone(),
        }
    }

    /// A bucket with Object Lock enabled (versioning comes with it); asserts versioning is on.
    pub fn create_lock_bucket(&self, bucket: &str) {
        let r = self.admin(bucket).create_bucket(true, false);
        assert_eq!(r["versioning"], "Enabled", "{r}");
    }

    /// A bucket without versioning or Object Lock.
    pub fn create_bucket(&self, bucket: &str) {
        self.admin(bucket).create_bucket(false, false);
    }

    /// A bucket with versioning but without Object Lock.
    pub fn create_versioned_bucket(&self, bucket: &str) {
        let r = self.admin(bucket).create_bucket(false, true);
        assert_eq!(r["versioning"], "Enabled", "{r}");
    }

    /// The repository `s3://BUCKET/repo` on this server, as a [`Server`] for the CLI (it owns
    /// a scratch folder for sources and restores; dropping it leaves moto running).
    pub fn repo(&self, bucket: &str) -> Server {
        self.repo_as(bucket, &self.credentials)
    }

    /// [`Moto::repo`] signing with `credentials`.
    pub fn repo_as(&self, bucket: &str, credentials: &super::s3_admin::S3Credentials) -> Server {
        assert_valid_bucket_name(bucket);
        Server {
            child: None,
            port: self.port,
            dir: tempdir("ocvault-moto-repo-"),
            url: format!("s3://{bucket}/repo"),
            env: credentials.env(),
            options: vec![format!("s3.endpoint={}", self.endpoint)],
        }
    }

    /// Creates an admin user (everything allowed) and a backup-host user (S3 without
    /// DeleteObject, DeleteObjectVersion or retention bypass) through moto's IAM API, then
    /// switches authentication on: from then on every request must be signed by one of them
    /// and moto applies its policy. [`Moto::admin`] and [`Moto::repo`] sign as the admin
    /// afterwards. Once per server, before anything else uses its IAM.
    pub fn enforce_iam(&mut self) -> BackupHostCredentials {
        let r = super::s3_admin::S3Admin {
            endpoint: self.endpoint.clone(),
            bucket: String::new(),
            credentials: self.credentials.clone(),
        }
        .run("iam-setup", &[], None);
        let creds = |v: &serde_json::Value| super::s3_admin::S3Credentials {
            access_key_id: v["access_key_id"].as_str().unwrap().into(),
            secret_access_key: v["secret_access_key"].as_str().unwrap().into(),
        };
        let out = BackupHostCredentials {
            admin: creds(&r["admin"]),
            backup_host: creds(&r["backup"]),
        };
        self.credentials = out.admin.clone();
        out
    }
}

/// The two users [`Moto::enforce_iam`] creates.
pub struct BackupHostCredentials {
    /// Allowed everything.
    pub admin: super::s3_admin::S3Credentials,
    /// Allowed S3 reads and writes, denied every delete and retention bypass.
    pub backup_host: super::s3_admin::S3Credentials,
}

/// S3 bucket names are DNS names: 3 to 63 of a-z, 0-9, '-' and '.', starting and ending
/// with a letter or digit. moto refuses others with InvalidBucketName.
pub fn assert_valid_bucket_name(bucket: &str) {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    assert!(ok, "{bucket:?} is not a valid S3 bucket name");
}
