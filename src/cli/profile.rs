//! Profiles: a TOML file (`--profile NAME` or `--config FILE`) holding what a scheduled job
//! would otherwise repeat on every command line: the repository, its backend options and
//! password source, snapshot sources, the forget policy and a copy destination. It fills
//! [`GlobalOptions`] and the command's arguments before dispatch, so commands are unaware of
//! it. Values given on the command line or in the environment win over the profile's.
//!
//! Secrets are never in a profile in clear: a key that names one (`password`, `*secret*`,
//! `*token*`, ...) is refused unless it is a `*-file` or `*-command` reference.

use super::{Cli, Command, GlobalOptions};
use ocvault::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profile {
    #[serde(default)]
    pub repository: RepositorySection,
    /// Storage variables (`AWS_PROFILE`, `AWS_REGION`, ...) set for this process where the
    /// environment does not set them already.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub snapshot: SnapshotSection,
    #[serde(default)]
    pub forget: ForgetSection,
    #[serde(default)]
    pub copy: CopySection,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepositorySection {
    pub repo: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub cache_dir: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SnapshotSection {
    #[serde(default)]
    pub sources: Vec<PathBuf>,
    #[serde(default)]
    pub excludes: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub host: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ForgetSection {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// A duration such as `30d`.
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    #[serde(default)]
    pub prune: bool,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CopySection {
    pub to: Option<String>,
    #[serde(default)]
    pub to_options: Vec<String>,
    pub to_password_file: Option<PathBuf>,
    pub to_password_command: Option<String>,
    /// The destination's own storage variables (non-secret ones such as `AWS_REGION` or
    /// `AWS_ENDPOINT_URL`; its keys come from `OCVAULT_TO_AWS_*` in the environment, which
    /// win over these). Giving any makes the destination ignore the source's `AWS_*`.
    #[serde(default)]
    pub to_env: BTreeMap<String, String>,
}

/// Words in a key that mark it as holding a secret (as for `-o` options).
const SECRET_WORDS: [&str; 6] = [
    "secret",
    "password",
    "token",
    "credential",
    "passphrase",
    "private",
];

/// Fills the command line from `--profile`/`--config`, if one is given.
pub fn apply(mut cli: Cli) -> Result<Cli> {
    // These touch no repository: a missing OCVAULT_PROFILE must not stop them.
    if matches!(cli.command, Command::Completion(_) | Command::Man(_)) {
        return Ok(cli);
    }
    let path = match (&cli.global.config, &cli.global.profile) {
        (Some(file), _) => file.clone(),
        (None, Some(name)) => find(name)?,
        (None, None) => return Ok(cli),
    };
    let profile = load(&path)?;
    fill_global(&mut cli.global, &profile.repository)?;
    set_env(&profile.env);
    match &mut cli.command {
        Command::Snapshot(a) => a.fill_from_profile(&profile.snapshot),
        Command::Forget(a) => a.fill_from_profile(&profile.forget)?,
        Command::Copy(a) => a.fill_from_profile(&profile.copy),
        _ => {}
    }
    Ok(cli)
}

/// `NAME.toml` in `$XDG_CONFIG_HOME/ocvault` (else `~/.config/ocvault`), else in `/etc/ocvault`.
fn find(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::usage(format!(
            "profile name {name:?} must be a plain name (use --config FILE for a path)"
        )));
    }
    let file = format!("{name}.toml");
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("ocvault").join(&file));
    let system = Path::new("/etc/ocvault").join(&file);
    let candidates: Vec<PathBuf> = user.into_iter().chain([system]).collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            Error::usage(format!(
                "profile {name:?} not found (looked for {})",
                tried.join(", ")
            ))
        })
}

/// Reads and checks a profile file: no secret in clear, no unknown key.
pub fn load(path: &Path) -> Result<Profile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<Profile> {
    let shown = path.display();
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| Error::usage(format!("profile {shown}: {}", one_line(&e, text))))?;
    if let Some(key) = secret_in_clear(&table, "") {
        return Err(Error::usage(format!(
            "profile {shown}: {key} holds a secret in clear: use password-file or password-command, or the environment"
        )));
    }
    let profile: Profile = toml::from_str(text)
        .map_err(|e| Error::usage(format!("profile {shown}: {}", one_line(&e, text))))?;
    if profile.repository.password_file.is_some() && profile.repository.password_command.is_some() {
        return Err(Error::usage(format!(
            "profile {shown}: give password-file or password-command, not both"
        )));
    }
    if let Some(k) = profile.env.keys().find(|k| k.starts_with("OCVAULT_")) {
        return Err(Error::usage(format!(
            "profile {shown}: env.{k}: ocvault's own settings go in their sections, not in [env]"
        )));
    }
    warn_if_readable(path, &profile);
    Ok(profile)
}

/// The first key (dotted path) whose name marks a secret and which is not a file or command
/// reference.
fn secret_in_clear(table: &toml::Table, prefix: &str) -> Option<String> {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        if let toml::Value::Table(inner) = value {
            if let Some(found) = secret_in_clear(inner, &format!("{path}.")) {
                return Some(found);
            }
            continue;
        }
        let lower = key.to_ascii_lowercase().replace('_', "-");
        let reference = lower.ends_with("-file") || lower.ends_with("-command");
        if !reference && SECRET_WORDS.iter().any(|w| lower.contains(w)) {
            return Some(path);
        }
    }
    None
}

/// toml's messages quote the offending line over several lines: one line with its number.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// Environment values may point at credentials: a profile holding some should be private.
fn warn_if_readable(path: &Path, profile: &Profile) {
    use std::os::unix::fs::PermissionsExt;
    if profile.env.is_empty() && profile.copy.to_env.is_empty() {
        return;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o044 != 0 {
            super::warn_all([format!(
                "profile {} sets environment values and is readable by other users (chmod 600 it)",
                path.display()
            )]);
        }
    }
}

fn fill_global(g: &mut GlobalOptions, r: &RepositorySection) -> Result<()> {
    if g.repo.is_none() {
        g.repo = r.repo.clone();
    }
    // A repeated option keeps its last value: the command line's come last and win.
    let mut options = r.options.clone();
    options.append(&mut g.options);
    g.options = options;
    if g.cache_dir.is_none() {
        g.cache_dir = r.cache_dir.clone();
    }
    // The environment's and the command line's password sources win over the profile's.
    let given = std::env::var_os("OCVAULT_PASSWORD").is_some()
        || std::env::var_os("OCVAULT_PASSWORD_COMMAND").is_some()
        || g.password_file.is_some();
    if !given {
        g.password_file = r.password_file.clone();
        g.password_command = r.password_command.clone();
    }
    Ok(())
}

/// Sets the profile's storage variables the environment does not set already. Runs before
/// any thread is started (the command has not begun).
fn set_env(vars: &BTreeMap<String, String>) {
    for (k, v) in vars {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
}

impl super::snapshot::Args {
    /// Sources when no paths, --stdin or --command are given; tags and host when none are;
    /// the profile's excludes always, with the command line's.
    fn fill_from_profile(&mut self, p: &SnapshotSection) {
        if self.paths.is_empty() && !self.stdin && self.command.is_none() {
            self.paths = p.sources.clone();
        }
        if self.tags.is_empty() {
            self.tags = p.tags.clone();
        }
        if self.host.is_none() {
            self.host = p.host.clone();
        }
        self.excludes.extend(p.excludes.iter().cloned());
    }
}

impl super::forget::Args {
    /// The profile's policy (and its `prune`) when the command line names no snapshots and
    /// gives no keep option: a policy is taken whole, never mixed.
    fn fill_from_profile(&mut self, p: &ForgetSection) -> Result<()> {
        let given = self.selection.has_ids()
            || self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
            || self.keep_within_hourly.is_some()
            || self.keep_within_daily.is_some()
            || self.keep_within_weekly.is_some()
            || self.keep_within_monthly.is_some()
            || self.keep_within_yearly.is_some()
            || !self.keep_tags.is_empty();
        if given {
            return Ok(());
        }
        self.keep_last = p.keep_last;
        self.keep_hourly = p.keep_hourly;
        self.keep_daily = p.keep_daily;
        self.keep_weekly = p.keep_weekly;
        self.keep_monthly = p.keep_monthly;
        self.keep_yearly = p.keep_yearly;
        self.keep_within = p
            .keep_within
            .as_deref()
            .map(super::args::duration)
            .transpose()
            .map_err(|e| Error::usage(format!("profile: forget.keep-within: {e}")))?;
        self.keep_tags = p.keep_tags.clone();
        self.prune |= p.prune;
        Ok(())
    }
}

impl super::copy::Args {
    fn fill_from_profile(&mut self, p: &CopySection) {
        if self.to.is_none() {
            self.to = p.to.clone();
        }
        let mut options = p.to_options.clone();
        options.append(&mut self.to_options);
        self.to_options = options;
        if self.to_password_file.is_none() {
            self.to_password_file = p.to_password_file.clone();
            self.to_password_command = p.to_password_command.clone();
        }
        self.to_env = p.to_env.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Profile> {
        parse(text, Path::new("test.toml"))
    }

    #[test]
    fn a_full_profile_parses() {
        let p = parsed(
            r#"
[repository]
repo = "s3://bucket/prod"
options = ["s3.region=eu-west-1"]
password-file = "/etc/ocvault/password"
cache-dir = "/var/cache/ocvault"
[env]
AWS_PROFILE = "backup"
[snapshot]
sources = ["/etc", "/srv/git"]
excludes = ["*.tmp"]
tags = ["daily"]
host = "db1"
[forget]
keep-daily = 30
keep-within = "2d"
prune = true
[copy]
to = "s3://other/prod"
to-options = ["s3.region=us-east-1"]
to-password-file = "/etc/ocvault/copy-password"
to-env = { AWS_REGION = "us-east-1" }
"#,
        )
        .unwrap();
        assert_eq!(p.repository.repo.as_deref(), Some("s3://bucket/prod"));
        assert_eq!(p.snapshot.sources.len(), 2);
        assert_eq!(p.forget.keep_daily, Some(30));
        assert!(p.forget.prune);
        assert_eq!(p.copy.to_env["AWS_REGION"], "us-east-1");
    }

    #[test]
    fn secrets_in_clear_and_unknown_keys_are_refused_in_one_line() {
        for (text, names) in [
            ("[repository]\npassword = \"x\"", "repository.password"),
            (
                "[env]\nAWS_SECRET_ACCESS_KEY = \"x\"",
                "env.AWS_SECRET_ACCESS_KEY",
            ),
            (
                "[copy]\nto-env = { AWS_SESSION_TOKEN = \"x\" }",
                "copy.to-env.AWS_SESSION_TOKEN",
            ),
            ("[repository]\nrepo = \"/r\"\nrepos = \"/r\"", "repos"),
            ("[snapshot]\nsource = [\"/etc\"]", "source"),
            ("[backup]\nsources = []", "backup"),
        ] {
            let Err(Error::Usage(msg)) = parsed(text) else {
                panic!("accepted: {text}");
            };
            assert!(msg.contains(names) && msg.contains("test.toml"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        parsed("[repository]\npassword-command = \"pass show x\"").unwrap();
    }
}
