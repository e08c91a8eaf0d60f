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
    let bin = require(
        "s3s-fs",
        &[],
        "cargo install s3s-fs@0.14.1 --features binary --locked",
    );
    let dir = tempdir("ocvault-s3-");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bucket")).unwrap();
    let port = free_port();
    let (key, secret) = ("ocvaulttestkey", "ocvault-test-secret-0123456789");
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
