//! Repository URLs and `-o key=value` options, turned into an OpenDAL service and its config.
//! Secrets come from the environment only: an option that looks secret is refused, so that no
//! password or key ever sits in the argv that `ps` shows.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a repository lives, ready for OpenDAL.
#[derive(Debug)]
pub struct Location {
    /// The OpenDAL scheme ("fs", "s3", ...).
    pub scheme: String,
    /// The service config; may hold credentials read from the environment, never printed.
    pub config: Vec<(String, String)>,
    /// What messages show: the URL without any secret.
    pub display: String,
    /// A local folder, for the checks a path allows (exists, create).
    pub local_root: Option<PathBuf>,
    /// Whether a write must go to a temporary name and be renamed: the service may leave a
    /// half-written object under its final name when a connection drops mid-upload.
    pub rename_writes: bool,
    /// S3 settings beyond OpenDAL's service config.
    pub s3: S3Settings,
}

/// What an s3:// location asks for beyond OpenDAL's config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `-o s3.data_storage_class=CLASS`: the storage class of data packs, recorded by `init`.
    pub data_storage_class: Option<String>,
    /// `-o s3.original_versions=true`: read every file as first written, past later versions
    /// and delete markers (recovery after an attack on a locked bucket).
    pub original_versions: bool,
}

/// The `-o` options not consumed by the URL's service: retry, timeout and fault settings.
pub type Options = BTreeMap<String, String>;

/// Splits `key=value` strings; a repeated key keeps its last value.
pub fn parse_options(raw: &[String]) -> Result<Options> {
    let mut out = Options::new();
    for r in raw {
        let (k, v) = r
            .split_once('=')
            .ok_or_else(|| Error::usage(format!("option {r:?} is not KEY=VALUE")))?;
        let k = k.trim().to_ascii_lowercase();
        if looks_secret(&k) {
            return Err(Error::usage(format!(
                "option {k} looks secret and would show in the process list: give it in the environment instead (see README, \"Repository URLs\")"
            )));
        }
        out.insert(k, v.trim().to_string());
    }
    Ok(out)
}

fn looks_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    ["secret", "password", "token", "credential", "passphrase"]
        .iter()
        .any(|s| last.contains(s))
}

/// Takes the options a scheme understands out of `opts`; `prefix` is the scheme's namespace.
fn take(opts: &mut Options, key: &str) -> Option<String> {
    opts.remove(key)
}

/// Where a location's storage variables (`AWS_*`, `OCVAULT_WEBDAV_*`, `OCVAULT_OPENDAL_*`)
/// come from: the process environment, or a set of its own (a `copy` destination in another
/// account, whose credentials must not mix with the source's).
#[derive(Clone, Default)]
pub enum StorageEnv {
    #[default]
    Process,
    /// Only these variables, by their usual names (`AWS_ACCESS_KEY_ID`, ...); credentials are
    /// never taken from the process environment, ~/.aws or instance metadata then.
    Own(BTreeMap<String, String>),
}

impl std::fmt::Debug for StorageEnv {
    /// Names only: the values may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageEnv::Process => f.write_str("Process"),
            StorageEnv::Own(vars) => f.debug_tuple("Own").field(&vars.keys()).finish(),
        }
    }
}

impl StorageEnv {
    fn get(&self, name: &str) -> Option<String> {
        match self {
            StorageEnv::Process => std::env::var(name).ok(),
            StorageEnv::Own(vars) => vars.get(name).cloned(),
        }
        .filter(|v| !v.is_empty())
    }

    fn vars(&self) -> Vec<(String, String)> {
        match self {
            StorageEnv::Process => std::env::vars().collect(),
            StorageEnv::Own(vars) => vars.clone().into_iter().collect(),
        }
    }
}

/// The prefix under which the process environment holds a `copy` destination's own storage
/// variables (`OCVAULT_TO_AWS_ACCESS_KEY_ID`, ...); messages name them by it.
pub const OWN_PREFIX: &str = "OCVAULT_TO_";

/// Parses a repository URL with the process environment. Consumes the service's `-o`
/// options from `opts`.
pub fn parse(url: &str, opts: &mut Options) -> Result<Location> {
    parse_with_env(url, opts, &StorageEnv::Process)
}

/// Parses a repository URL, reading storage variables from `env`.
pub fn parse_with_env(url: &str, opts: &mut Options, env: &StorageEnv) -> Result<Location> {
    if url == "memory:" || url.starts_with("memory:") {
        return Ok(Location {
            scheme: "memory".into(),
            config: vec![],
            display: "memory:".into(),
            local_root: None,
            rename_writes: false,
            s3: S3Settings::default(),
        });
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        return parse_s3(url, rest, opts, env);
    }
    if let Some(rest) = url.strip_prefix("sftp://") {
        return parse_sftp(url, rest, opts);
    }
    if let Some(rest) = url.strip_prefix("webdav://") {
        return parse_webdav(url, rest, "http", env);
    }
    if let Some(rest) = url.strip_prefix("webdavs://") {
        return parse_webdav(url, rest, "https", env);
    }
    if let Some(scheme) = url.strip_prefix("opendal:") {
        return parse_opendal(url, scheme, opts, env);
    }
    let path = url.strip_prefix("fs:").unwrap_or(url);
    if path.contains("://") {
        return Err(Error::usage(format!(
            "unsupported repository URL {url:?}: use a path, fs:PATH, s3://, sftp://, webdav://, webdavs://, opendal:SCHEME or memory:"
        )));
    }
    if path.is_empty() {
        return Err(Error::usage("empty repository path"));
    }
    let root = absolute(Path::new(path))?;
    let root_s = root
        .to_str()
        .ok_or_else(|| Error::usage("repository path must be UTF-8"))?
        .to_string();
    Ok(Location {
        scheme: "fs".into(),
        // No `atomic_write_dir`: OpenDAL would create `tmp/` when the operator is built, and a
        // command that only reads must write nothing (it may run on read-only storage). Writes
        // through OpenDAL go to `tmp/` and are renamed (`rename_writes`), creating it only then.
        config: vec![("root".into(), root_s.clone())],
        display: root_s,
        local_root: Some(root),
        rename_writes: true,
        s3: S3Settings::default(),
    })
}

/// `host[:port]` then `/path`; the path keeps its leading slash.
fn split_authority(url: &str, rest: &str) -> Result<(String, String)> {
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if auth.is_empty() {
        return Err(Error::usage(format!("{url:?} names no host")));
    }
    Ok((auth.to_string(), path.to_string()))
}

fn parse_s3(url: &str, rest: &str, opts: &mut Options, env: &StorageEnv) -> Result<Location> {
    let (bucket, prefix) = match rest.split_once('/') {
        Some((b, p)) => (b, p.trim_matches('/')),
        None => (rest, ""),
    };
    if bucket.is_empty() {
        return Err(Error::usage(format!(
            "{url:?} names no bucket (s3://BUCKET/PREFIX)"
        )));
    }
    let endpoint = take(opts, "s3.endpoint")
        .or_else(|| env.get("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env.get("AWS_ENDPOINT_URL"));
    let region = take(opts, "s3.region")
        .or_else(|| env.get("AWS_REGION"))
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let mut config = vec![
        ("bucket".to_string(), bucket.to_string()),
        ("root".to_string(), format!("/{prefix}")),
        ("region".to_string(), region),
    ];
    if let Some(e) = endpoint {
        config.push(("endpoint".into(), e));
    }
    if let Some(v) = take(opts, "s3.storage_class") {
        config.push(("default_storage_class".into(), v));
    }
    let s3 = S3Settings {
        data_storage_class: take(opts, "s3.data_storage_class"),
        original_versions: match take(opts, "s3.original_versions").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(Error::usage(format!(
                    "s3.original_versions must be true or false, not {v:?}"
                )))
            }
        },
    };
    if take(opts, "s3.virtual_host").as_deref() == Some("true") {
        config.push(("enable_virtual_host_style".into(), "true".into()));
    }
    // Credentials: the standard AWS variables, read here so a missing one is a clear error
    // rather than a signature failure deep in a request.
    let keys = match (env, env.get("AWS_PROFILE")) {
        // OpenDAL would read a named profile through the process environment, where the
        // source's AWS_ACCESS_KEY_ID wins over it: its keys are read here instead.
        (StorageEnv::Own(_), Some(profile)) if env.get("AWS_ACCESS_KEY_ID").is_none() => {
            profile_keys(env, &profile)?
        }
        _ => (
            env.get("AWS_ACCESS_KEY_ID"),
            env.get("AWS_SECRET_ACCESS_KEY"),
            env.get("AWS_SESSION_TOKEN"),
        ),
    };
    match (keys.0, keys.1) {
        (Some(id), Some(secret)) => {
            config.push(("access_key_id".into(), id));
            config.push(("secret_access_key".into(), secret));
            if let Some(t) = keys.2 {
                config.push(("session_token".into(), t));
            }
            // Only what we pass: no surprise from ~/.aws or instance metadata.
            config.push(("disable_config_load".into(), "true".into()));
            config.push(("disable_ec2_metadata".into(), "true".into()));
        }
        // A set of its own must name its credentials: the fallbacks would find the source's.
        (None, None) if matches!(env, StorageEnv::Own(_)) => {
            return Err(Error::usage(format!(
                "{url}: no credentials of its own: set {OWN_PREFIX}AWS_ACCESS_KEY_ID and {OWN_PREFIX}AWS_SECRET_ACCESS_KEY"
            )))
        }
        (None, None) => {} // S3Api falls back to ~/.aws and instance credentials.
        _ => {
            let p = match env {
                StorageEnv::Own(_) => OWN_PREFIX,
                StorageEnv::Process => "",
            };
            return Err(Error::usage(format!(
                "set both {p}AWS_ACCESS_KEY_ID and {p}AWS_SECRET_ACCESS_KEY, or neither"
            )));
        }
    }
    Ok(Location {
        scheme: "s3".into(),
        config,
        display: url.to_string(),
        local_root: None,
        // A PUT is atomic: an object appears whole or not at all.
        rename_writes: false,
        s3,
    })
}

/// Access key, secret and session token of `profile` in the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, else ~/.aws/credentials): static keys only.
fn profile_keys(
    env: &StorageEnv,
    profile: &str,
) -> Result<(Option<String>, Option<String>, Option<String>)> {
    let file = env
        .get("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws/credentials")))
        .ok_or_else(|| Error::usage("AWS_PROFILE given, but no HOME to find ~/.aws/credentials"))?;
    let shown = file.display();
    let ini = ini::Ini::load_from_file_noescape(&file).map_err(|e| match e {
        ini::Error::Io(e) => {
            Error::usage(format!("AWS_PROFILE {profile}: cannot read {shown}: {e}"))
        }
        // Line only: the message never quotes the file (it holds secrets).
        ini::Error::Parse(e) => Error::usage(format!(
            "AWS_PROFILE {profile}: {shown} line {}: not an INI file",
            e.line
        )),
    })?;
    let section = ini
        .section(Some(profile))
        .ok_or_else(|| Error::usage(format!("AWS_PROFILE {profile}: no [{profile}] in {shown}")))?;
    let get = |k: &str| section.get(k).map(str::to_string).filter(|v| !v.is_empty());
    let keys = (
        get("aws_access_key_id"),
        get("aws_secret_access_key"),
        get("aws_session_token"),
    );
    if keys.0.is_none() || keys.1.is_none() {
        return Err(Error::usage(format!(
            "AWS_PROFILE {profile}: [{profile}] in {shown} needs aws_access_key_id and aws_secret_access_key (a destination's profile is read for static keys only)"
        )));
    }
    Ok(keys)
}

fn parse_sftp(url: &str, rest: &str, opts: &mut Options) -> Result<Location> {
    let (auth, path) = split_authority(url, rest)?;
    let (user, hostport) = match auth.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, auth.clone()),
    };
    if user.as_deref().is_some_and(|u| u.contains(':')) {
        return Err(Error::usage(
            "a password in an sftp URL would show in the process list: use a key (-o sftp.key=FILE)",
        ));
    }
    if path.len() < 2 {
        return Err(Error::usage(format!(
            "{url:?} needs an absolute path (sftp://USER@HOST[:PORT]/ABSOLUTE/PATH)"
        )));
    }
    let endpoint = match &user {
        Some(u) => format!("ssh://{u}@{hostport}"),
        None => format!("ssh://{hostport}"),
    };
    let mut config = vec![
        ("endpoint".to_string(), endpoint),
        ("root".to_string(), path.clone()),
    ];
    if let Some(u) = user {
        config.push(("user".into(), u));
    }
    if let Some(k) = take(opts, "sftp.key") {
        let k = absolute(Path::new(&k))?;
        if !k.is_file() {
            return Err(Error::usage(format!(
                "sftp.key {} is not a file",
                k.display()
            )));
        }
        config.push(("key".into(), k.display().to_string()));
    }
    let policy = take(opts, "sftp.known_hosts").unwrap_or_else(|| "strict".into());
    if !matches!(policy.as_str(), "strict" | "accept" | "add") {
        return Err(Error::usage(format!(
            "sftp.known_hosts must be strict, add or accept, not {policy:?}"
        )));
    }
    config.push(("known_hosts_strategy".into(), policy));
    Ok(Location {
        scheme: "sftp".into(),
        config,
        display: url.to_string(),
        local_root: None,
        rename_writes: true,
        s3: S3Settings::default(),
    })
}

fn parse_webdav(url: &str, rest: &str, http: &str, env: &StorageEnv) -> Result<Location> {
    let (auth, path) = split_authority(url, rest)?;
    if auth.contains('@') {
        return Err(Error::usage(
            "credentials in a webdav URL would show in the process list: set OCVAULT_WEBDAV_USER and OCVAULT_WEBDAV_PASSWORD",
        ));
    }
    let mut config = vec![
        ("endpoint".to_string(), format!("{http}://{auth}")),
        ("root".to_string(), path),
    ];
    if let Some(u) = env.get("OCVAULT_WEBDAV_USER") {
        config.push(("username".into(), u));
    }
    if let Some(p) = env.get("OCVAULT_WEBDAV_PASSWORD") {
        config.push(("password".into(), p));
    }
    Ok(Location {
        scheme: "webdav".into(),
        config,
        display: url.to_string(),
        local_root: None,
        rename_writes: true,
        s3: S3Settings::default(),
    })
}

/// Any service this build enables, configured by `-o key=value` (what OpenDAL documents for
/// that service) plus `OCVAULT_OPENDAL_<KEY>` variables for secrets.
fn parse_opendal(
    url: &str,
    scheme: &str,
    opts: &mut Options,
    env: &StorageEnv,
) -> Result<Location> {
    const ENABLED: [&str; 5] = ["fs", "memory", "s3", "sftp", "webdav"];
    if !ENABLED.contains(&scheme) {
        return Err(Error::usage(format!(
            "OpenDAL service {scheme:?} is not in this build (enabled: {})",
            ENABLED.join(", ")
        )));
    }
    let mut config: Vec<(String, String)> = Vec::new();
    let keys: Vec<String> = opts
        .keys()
        .filter(|k| !is_ocvault_option(k))
        .cloned()
        .collect();
    for k in keys {
        let v = opts.remove(&k).unwrap_or_default();
        config.push((k, v));
    }
    for (k, v) in env.vars() {
        if let Some(name) = k.strip_prefix("OCVAULT_OPENDAL_") {
            config.push((name.to_ascii_lowercase(), v));
        }
    }
    let local_root = (scheme == "fs")
        .then(|| {
            config
                .iter()
                .find(|(k, _)| k == "root")
                .map(|(_, v)| PathBuf::from(v))
        })
        .flatten();
    Ok(Location {
        scheme: scheme.to_string(),
        config,
        display: url.to_string(),
        local_root,
        rename_writes: matches!(scheme, "sftp" | "webdav"),
        s3: S3Settings::default(),
    })
}

/// Options ocvault itself reads, whatever the service.
pub fn is_ocvault_option(key: &str) -> bool {
    key.starts_with("retry.") || key.starts_with("fault.") || key == "timeout"
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Options {
        parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn get<'a>(l: &'a Location, k: &str) -> Option<&'a str> {
        l.config
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn paths_and_fs() {
        let l = parse("/srv/repo", &mut Options::new()).unwrap();
        assert_eq!(
            (l.scheme.as_str(), get(&l, "root")),
            ("fs", Some("/srv/repo"))
        );
        let l = parse("fs:/srv/repo", &mut Options::new()).unwrap();
        // Writes go through tmp/ by rename; nothing makes tmp/ before a write needs it.
        assert!(l.rename_writes);
        assert_eq!(get(&l, "atomic_write_dir"), None);
        assert!(parse("ftp://x/y", &mut Options::new()).is_err());
    }

    #[test]
    fn s3_bucket_prefix_endpoint() {
        let mut o = opts(&["s3.endpoint=http://127.0.0.1:9000", "s3.region=eu-west-1"]);
        let l = parse("s3://bucket/some/prefix/", &mut o).unwrap();
        assert!(o.is_empty());
        assert_eq!(get(&l, "bucket"), Some("bucket"));
        assert_eq!(get(&l, "root"), Some("/some/prefix"));
        assert_eq!(get(&l, "endpoint"), Some("http://127.0.0.1:9000"));
        assert_eq!(get(&l, "region"), Some("eu-west-1"));
        assert!(parse("s3:///x", &mut Options::new()).is_err());
    }

    #[test]
    fn sftp_user_host_port_path() {
        let mut o = opts(&["sftp.known_hosts=accept"]);
        let l = parse("sftp://backup@10.0.0.1:2222/srv/repo", &mut o).unwrap();
        assert_eq!(get(&l, "endpoint"), Some("ssh://backup@10.0.0.1:2222"));
        assert_eq!(get(&l, "root"), Some("/srv/repo"));
        assert_eq!(get(&l, "known_hosts_strategy"), Some("accept"));
        assert!(l.rename_writes);
        assert!(parse("sftp://u:pw@h/x", &mut Options::new()).is_err());
        assert!(parse("sftp://u@h", &mut Options::new()).is_err());
        let mut bad = opts(&["sftp.known_hosts=maybe"]);
        assert!(parse("sftp://u@h/x", &mut bad).is_err());
    }

    #[test]
    fn webdav_http_and_https() {
        let l = parse("webdav://127.0.0.1:8080/backups", &mut Options::new()).unwrap();
        assert_eq!(get(&l, "endpoint"), Some("http://127.0.0.1:8080"));
        assert_eq!(get(&l, "root"), Some("/backups"));
        let l = parse("webdavs://dav.example.com/r", &mut Options::new()).unwrap();
        assert_eq!(get(&l, "endpoint"), Some("https://dav.example.com"));
        assert!(parse("webdav://u:p@h/r", &mut Options::new()).is_err());
    }

    #[test]
    fn opendal_scheme_takes_options() {
        let mut o = opts(&["root=/tmp/x", "retry.max=3"]);
        let l = parse("opendal:fs", &mut o).unwrap();
        assert_eq!(get(&l, "root"), Some("/tmp/x"));
        assert_eq!(o.get("retry.max").map(String::as_str), Some("3"));
        assert!(parse("opendal:gcs", &mut Options::new()).is_err());
    }

    #[test]
    fn an_own_set_of_variables_replaces_the_process_environment() {
        let own = |vars: &[(&str, &str)]| {
            StorageEnv::Own(
                vars.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let l = parse_with_env(
            "s3://b/p",
            &mut Options::new(),
            &own(&[
                ("AWS_ACCESS_KEY_ID", "dr"),
                ("AWS_SECRET_ACCESS_KEY", "drsecret"),
                ("AWS_REGION", "eu-west-1"),
            ]),
        )
        .unwrap();
        assert_eq!(get(&l, "access_key_id"), Some("dr"));
        assert_eq!(get(&l, "region"), Some("eu-west-1"));
        assert_eq!(get(&l, "disable_config_load"), Some("true"));
        for vars in [
            &[("AWS_REGION", "eu-west-1")][..],
            &[("AWS_ACCESS_KEY_ID", "dr")][..],
        ] {
            let e = parse_with_env("s3://b/p", &mut Options::new(), &own(vars)).unwrap_err();
            assert!(
                e.to_string().contains("OCVAULT_TO_AWS_SECRET_ACCESS_KEY"),
                "{e}"
            );
        }
        // AWS_PROFILE: the static keys of that section of the credentials file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = src\naws_secret_access_key = srcsecret\n\n\
             [dr-account]\naws_access_key_id = dr\naws_secret_access_key = dr\\secret\n\
             aws_session_token = drtoken\n\n[sso]\nsso_start_url = https://x\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let with_profile = |name: &str| {
            parse_with_env(
                "s3://b/p",
                &mut Options::new(),
                &own(&[("AWS_PROFILE", name), ("AWS_SHARED_CREDENTIALS_FILE", file)]),
            )
        };
        let l = with_profile("dr-account").unwrap();
        assert_eq!(get(&l, "access_key_id"), Some("dr"));
        assert_eq!(get(&l, "secret_access_key"), Some("dr\\secret"));
        assert_eq!(get(&l, "session_token"), Some("drtoken"));
        for (name, says) in [("sso", "needs aws_access_key_id"), ("none", "no [none]")] {
            let e = with_profile(name).unwrap_err().to_string();
            assert!(e.contains(says) && !e.contains("srcsecret"), "{e}");
        }
        // Debug output names the variables, never their values.
        let shown = format!("{:?}", own(&[("AWS_SECRET_ACCESS_KEY", "drsecret")]));
        assert!(!shown.contains("drsecret"), "{shown}");
    }

    #[test]
    fn secret_options_are_refused() {
        for k in ["s3.secret_access_key=x", "password=y", "session_token=z"] {
            assert!(parse_options(&[k.to_string()]).is_err(), "{k}");
        }
        assert!(parse_options(&["novalue".to_string()]).is_err());
    }
}
