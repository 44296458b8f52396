//! The working copy of a project deployed from a Git repository.
//!
//! Each project keeps its checkouts in the agent's private directory
//! (`<private>/checkouts/<project id>`), never at a path a person chose: one object store
//! (`git`, a bare repository) and one working tree per commit (`trees/<sha>`, a `git worktree`).
//! `current` is a symlink to the tree of the commit that last deployed successfully, and the
//! path the server keeps for the project goes through it, so lifecycle jobs, log streams and
//! inspections read the commit that runs. A checkout:
//!
//! 1. writes the run's credentials (an SSH deploy key, or a git config file holding the https
//!    `Authorization` header) as 0600 files in the private directory, and the project's pinned
//!    host key (if any) as its `known_hosts`; a [`Credentials`] guard removes the credential
//!    files when the checkout ends, whichever way;
//! 2. runs `git fetch --depth 1 -- <url> <ref or commit>` through the runner (argv only, a
//!    cleared environment with a private `HOME`, no system or global configuration, no prompt,
//!    only the https/http/ssh protocols), watching the working copy's size while it runs: over
//!    the limit, the fetch is killed and the partial copy removed;
//! 3. checks out the fetched commit into its own tree (detached, forced, untracked files
//!    cleaned) and reads its id, author and subject for the job's result, with the host key
//!    SSH pinned on first use;
//! 4. after the deploy, [`promote`] (it succeeded: `current` now points at the new tree and the
//!    other trees are removed; once the job's result is sent, [`prune`] drops from the store
//!    what neither the last [`KEPT_DEPLOYS`] successful deploys nor a kept tree need) or
//!    [`keep_failed`] (it failed: `current` stays where it was; the new tree is kept, as
//!    containers of a deploy that failed halfway may use it, until a deploy succeeds).
//!
//! Every line of git's output passes the redactor, which knows the credentials.

use crate::private_fs;
use crate::runner::{self, CommandSpec, OutputLine, Redactor, RunError};
use shared::source::{CheckoutReport, CommitInfo, GitCheckout, GitUrl, Transport};
use shared::ProjectId;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest working copy (objects and files) a checkout may make unless the job says less.
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// The longest a fetch may take unless the job says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The `PATH` git and ssh run with.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Every credential file's name ends with this; [`sweep`] removes those a crash left.
const CREDENTIAL_SUFFIX: &str = ".git-credential";

/// Why a checkout failed; the message is what the deployment shows.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0}")]
    Refused(String),
    #[error(
        "the host key of {host} changed since it was pinned at the first deploy: if the server \
         really changed its key, clear the pinned host key of the project and deploy again.\n{output}"
    )]
    HostKeyChanged { host: String, output: String },
    #[error("`git {step}` failed (exit code {exit_code:?}):\n{output}")]
    Failed {
        step: &'static str,
        exit_code: Option<i32>,
        output: String,
    },
    #[error(
        "the repository is over the size limit of {} MiB (it reached {} MiB); its copy was removed",
        limit / (1024 * 1024),
        size / (1024 * 1024)
    )]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Command(#[from] RunError),
    #[error(transparent)]
    Private(#[from] private_fs::PrivateDirError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitError {
    let what = what.into();
    move |source| GitError::Io { what, source }
}

/// A finished checkout.
#[derive(Debug)]
pub struct CheckedOut {
    /// The commit's working tree: nothing of the project may resolve outside it.
    pub root: PathBuf,
    /// Where the compose file is (`root/subdir`).
    pub directory: PathBuf,
    /// What the job reports; its directory goes through `current`, where the project lives
    /// once the deploy succeeded.
    pub report: CheckoutReport,
}

/// Where a project's checkouts and its pinned host key live.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `<private>/checkouts/<project id>`.
    pub base: PathBuf,
    /// The private directory credential files go to.
    pub private_dir: PathBuf,
}

impl Layout {
    pub fn new(private_dir: &Path, project_id: ProjectId) -> Self {
        Self {
            base: private_dir.join("checkouts").join(project_id.to_string()),
            private_dir: private_dir.to_owned(),
        }
    }
    /// The object store every commit is fetched into (a bare repository).
    pub fn git_dir(&self) -> PathBuf {
        self.base.join("git")
    }
    /// The working trees, one per commit.
    pub fn trees(&self) -> PathBuf {
        self.base.join("trees")
    }
    /// The working tree of commit `sha`.
    pub fn tree(&self, sha: &str) -> PathBuf {
        self.trees().join(sha)
    }
    /// What the store keeps of the working tree of commit `sha` (`git worktree` names it after
    /// the tree's directory): its HEAD, index, and the path of the tree's `.git` file.
    pub fn tree_admin(&self, sha: &str) -> PathBuf {
        self.git_dir().join("worktrees").join(sha)
    }
    /// The symlink to the tree of the commit that last deployed successfully.
    pub fn current(&self) -> PathBuf {
        self.base.join("current")
    }
    /// Where agents before per-commit trees kept the one working copy; removed by the first
    /// [`promote`].
    pub fn repo(&self) -> PathBuf {
        self.base.join("repo")
    }
    pub fn home(&self) -> PathBuf {
        self.base.join("home")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.base.join("known_hosts")
    }
}

/// The run's credential files; dropping the guard (or [`Credentials::remove`]) deletes them.
#[derive(Debug, Default)]
pub struct Credentials {
    /// The SSH private key (0600).
    pub ssh_key: Option<PathBuf>,
    /// A git config file with the https `Authorization` header (0600).
    pub http_config: Option<PathBuf>,
}

impl Credentials {
    /// Writes the credentials `checkout` carries into `private_dir`.
    pub fn write(checkout: &GitCheckout, private_dir: &Path) -> Result<Self, GitError> {
        let mut credentials = Self::default();
        let name = |kind: &str| {
            private_dir.join(format!(
                "{}.{:08x}.{kind}{CREDENTIAL_SUFFIX}",
                std::process::id(),
                rand::random::<u32>()
            ))
        };
        if let Some(key) = &checkout.ssh_key {
            let path = name("ssh-key");
            let mut text = zeroize::Zeroizing::new(key.expose().trim_end().to_string());
            text.push('\n');
            private_fs::write_private_file(&path, text.as_bytes())?;
            credentials.ssh_key = Some(path);
        }
        if let Some(token) = &checkout.token {
            let path = name("http-config");
            let user = checkout
                .token_username
                .as_deref()
                .filter(|user| !user.is_empty())
                .unwrap_or("x-access-token");
            let header = zeroize::Zeroizing::new(basic_auth(user, token.expose()));
            let config = zeroize::Zeroizing::new(format!(
                "[http]\n\textraHeader = Authorization: Basic {}\n",
                *header
            ));
            private_fs::write_private_file(&path, config.as_bytes())?;
            credentials.http_config = Some(path);
        }
        Ok(credentials)
    }

    /// Removes the files now; what cannot be removed is logged (never its content).
    pub fn remove(&mut self) {
        for path in [self.ssh_key.take(), self.http_config.take()]
            .into_iter()
            .flatten()
        {
            if let Err(error) = std::fs::remove_file(&path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %error, "could not remove a git credential file");
                }
            }
        }
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `base64(user:token)`, as HTTP basic authentication sends it.
pub fn basic_auth(user: &str, token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
}

/// Removes credential files a crashed run left in `private_dir` (and the temporaries
/// `<name>.<random>.tmp` a run that died while writing one left); returns how many.
pub fn sweep(private_dir: &Path) -> usize {
    private_fs::remove_leftovers(private_dir, |name| {
        name.ends_with(CREDENTIAL_SUFFIX)
            || private_fs::temporary_target(name)
                .is_some_and(|target| target.ends_with(CREDENTIAL_SUFFIX))
    })
    .unwrap_or(0)
}

/// The credential values to mask in every line: the token, its basic-auth form, the key.
pub fn secrets_of(checkout: &GitCheckout) -> Vec<String> {
    let mut values = Vec::new();
    if let Some(token) = &checkout.token {
        values.push(token.expose().to_string());
        let user = checkout
            .token_username
            .as_deref()
            .unwrap_or("x-access-token");
        values.push(basic_auth(user, token.expose()));
    }
    if let Some(key) = &checkout.ssh_key {
        values.extend(
            key.expose()
                .lines()
                .filter(|line| line.len() >= 16 && !line.starts_with("-----"))
                .map(str::to_string),
        );
    }
    values
}

/// `value` quoted for the POSIX shell git runs `GIT_SSH_COMMAND` with.
fn shell_quote(value: &Path) -> String {
    format!("'{}'", value.to_string_lossy().replace('\'', r"'\''"))
}

/// The whole environment git runs with: nothing of the agent's own. With a `pinned` host key
/// ssh accepts only that key (`StrictHostKeyChecking=yes`): a server showing a key of another
/// type, or a host and port the pin does not name, is refused, never trusted as new.
pub fn environment(
    layout: &Layout,
    transport: Transport,
    credentials: &Credentials,
    pinned: bool,
) -> Vec<(OsString, OsString)> {
    let mut vars: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), PATH.into()),
        ("HOME".into(), layout.home().into()),
        ("LANG".into(), "C".into()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
        ("GIT_ASKPASS".into(), "/bin/false".into()),
        ("SSH_ASKPASS".into(), "/bin/false".into()),
        ("GIT_ALLOW_PROTOCOL".into(), "https:http:ssh".into()),
        ("GIT_PROTOCOL_FROM_USER".into(), "0".into()),
    ];
    if transport == Transport::Ssh {
        let mut ssh = String::from("ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes");
        ssh.push_str(match pinned {
            true => " -o StrictHostKeyChecking=yes",
            false => " -o StrictHostKeyChecking=accept-new",
        });
        ssh.push_str(" -o HashKnownHosts=no");
        ssh.push_str(" -o UserKnownHostsFile=");
        ssh.push_str(&shell_quote(&layout.known_hosts()));
        ssh.push_str(" -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=30");
        match &credentials.ssh_key {
            Some(key) => {
                ssh.push_str(" -i ");
                ssh.push_str(&shell_quote(key));
            }
            None => ssh.push_str(" -o IdentityFile=none"),
        }
        vars.push(("GIT_SSH_COMMAND".into(), ssh.into()));
        vars.push(("GIT_SSH_VARIANT".into(), "ssh".into()));
    }
    vars
}

/// `git`'s arguments before the subcommand: the working copy, only the safe protocols, no
/// hooks, and the https credentials' config file (its path only).
pub fn global_args(repo: &Path, credentials: &Credentials) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-C".into(), repo.into()];
    for setting in [
        "protocol.allow=never",
        "protocol.https.allow=always",
        "protocol.http.allow=always",
        "protocol.ssh.allow=always",
        "core.hooksPath=/dev/null",
        "core.fsmonitor=false",
        "credential.helper=",
        "submodule.recurse=false",
        "advice.detachedHead=false",
        // No `gc --auto` or maintenance detached from a fetch: it would outlive the run (and
        // its timeout) and race `prune`, which collects the store itself.
        "gc.auto=0",
        "maintenance.auto=false",
    ] {
        args.push("-c".into());
        args.push(setting.into());
    }
    if let Some(config) = &credentials.http_config {
        // The token's header goes to the URL's host only, never where a redirect points.
        args.push("-c".into());
        args.push("http.followRedirects=false".into());
        let mut include = OsString::from("include.path=");
        include.push(config);
        args.push("-c".into());
        args.push(include);
    }
    args
}

/// The fetch: one commit, no tags, nothing recursive; `--` before the URL and what to fetch.
pub fn fetch_args(checkout: &GitCheckout) -> Vec<OsString> {
    let what = match (&checkout.commit, &checkout.git_ref) {
        (Some(commit), _) => commit.clone(),
        (None, Some(git_ref)) => git_ref.as_str().to_string(),
        (None, None) => "HEAD".to_string(),
    };
    [
        "fetch",
        "--quiet",
        "--depth",
        "1",
        "--no-tags",
        "--no-recurse-submodules",
    ]
    .iter()
    .map(OsString::from)
    .chain([
        OsString::from("--"),
        OsString::from(checkout.url.as_str()),
        OsString::from(what),
    ])
    .collect()
}

/// Fetches and checks out what `checkout` names for the project with `layout`.
pub async fn checkout(
    checkout: &GitCheckout,
    layout: &Layout,
    redactor: &Redactor,
    mut on_line: impl FnMut(String),
) -> Result<CheckedOut, GitError> {
    if let Some(commit) = &checkout.commit {
        if !CommitInfo::is_sha(commit) {
            return Err(GitError::Refused(format!(
                "{commit:?} is not a full commit id"
            )));
        }
    }
    if checkout.token.is_some() && !token_transport_is_safe(&checkout.url) {
        return Err(GitError::Refused(format!(
            "refusing to send the token over plain http to {}: use https (plain http only \
             for a repository on this host)",
            checkout.url.host()
        )));
    }
    for dir in [
        &layout.private_dir,
        &layout.base,
        &layout.home(),
        &layout.trees(),
    ] {
        private_fs::ensure_private_dir(dir)?;
    }
    let known_hosts = layout.known_hosts();
    let pinned = checkout
        .known_hosts
        .as_deref()
        .map(str::trim)
        .filter(|lines| !lines.is_empty());
    match pinned {
        Some(lines) => {
            private_fs::write_private_file(&known_hosts, format!("{lines}\n").as_bytes())?
        }
        None => match std::fs::remove_file(&known_hosts) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io("clearing the project's known_hosts")(error)),
        },
    }

    let mut credentials = Credentials::write(checkout, &layout.private_dir)?;
    let result = fetch_and_check_out(
        checkout,
        layout,
        &credentials,
        pinned.is_some(),
        redactor,
        &mut on_line,
    )
    .await;
    credentials.remove();
    let (tree, commit) = match result {
        Ok(done) => done,
        Err(GitError::Failed { output, .. }) if pinned.is_some() && host_key_refused(&output) => {
            return Err(GitError::HostKeyChanged {
                host: checkout.url.host().to_string(),
                output,
            });
        }
        Err(error) => return Err(error),
    };
    let host_key = match checkout.url.transport() {
        Transport::Ssh => std::fs::read_to_string(&known_hosts)
            .ok()
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty()),
        Transport::Http => None,
    };
    let in_tree = |root: PathBuf| match &checkout.subdir {
        Some(subdir) => root.join(subdir.as_str()),
        None => root,
    };
    Ok(CheckedOut {
        report: CheckoutReport {
            commit,
            host_key,
            directory: Some(in_tree(layout.current()).to_string_lossy().into_owned()),
        },
        directory: in_tree(tree.clone()),
        root: tree,
    })
}

/// The deploy from `checked` succeeded: `current` points at its tree (switched atomically)
/// and every other tree, and the working copy of older agents, is removed.
pub fn promote(layout: &Layout, checked: &CheckedOut) -> Result<(), GitError> {
    let sha = &checked.report.commit.sha;
    let link = layout
        .base
        .join(format!("current.{:08x}.tmp", rand::random::<u32>()));
    std::os::unix::fs::symlink(Path::new("trees").join(sha), &link)
        .map_err(io("linking the new checkout"))?;
    if let Err(error) = std::fs::rename(&link, layout.current()) {
        let _ = std::fs::remove_file(&link);
        return Err(io("switching the current checkout")(error));
    }
    let trees = std::fs::read_dir(layout.trees()).map_err(io("listing the old checkouts"))?;
    for entry in trees.flatten() {
        if entry.file_name() != sha.as_str() {
            remove_copy(&entry.path());
        }
    }
    remove_copy(&layout.repo());
    Ok(())
}

/// How many of the project's last successful deploys keep their commits in the object store,
/// so that redeploying one of them works without its Git host.
pub const KEPT_DEPLOYS: usize = 5;
/// Where the commits of the last successful deploys are pinned: `<prefix>0` is the newest.
const DEPLOYED_REFS: &str = "refs/stagely/deployed/";

/// After [`promote`] of `sha`, once the job's result is sent: pins `sha` among the commits of
/// the last [`KEPT_DEPLOYS`] successful deploys and drops from the object store what neither
/// they nor a kept tree need (failed commits' trees, older deploys, whatever their fetches
/// brought), so the store does not grow with every deploy until it alone is over the size
/// limit and every checkout fails. A redeploy of an older commit fetches it again. Local
/// commands only: nothing is fetched, no credentials.
pub async fn prune(layout: &Layout, sha: &str, redactor: &Redactor) -> Result<(), GitError> {
    let repo = layout.git_dir();
    if !repo.join("HEAD").is_file() || !CommitInfo::is_sha(sha) {
        return Ok(());
    }
    let anonymous = Credentials::default();
    let env = environment(layout, Transport::Http, &anonymous, false);
    let git = |args: &[&str], timeout: u64| {
        let args = args.iter().map(OsString::from).collect();
        on_store(&repo, &anonymous, &env, args, Duration::from_secs(timeout))
    };
    let mut quiet = |_: String| {};

    let listed = capture(
        "for-each-ref",
        &git(
            &[
                "for-each-ref",
                "--format=%(refname) %(objectname)",
                DEPLOYED_REFS,
            ],
            60,
        ),
        redactor,
    )
    .await?;
    let mut pinned: Vec<(usize, String)> = listed
        .lines()
        .filter_map(|line| {
            let (name, object) = line.split_once(' ')?;
            let index = name.strip_prefix(DEPLOYED_REFS)?.parse().ok()?;
            Some((index, object.to_owned()))
        })
        .collect();
    pinned.sort();
    let kept: Vec<&str> = std::iter::once(sha)
        .chain(pinned.iter().map(|(_, object)| object.as_str()))
        .filter(|object| CommitInfo::is_sha(object))
        .fold(Vec::new(), |mut kept, object| {
            if !kept.contains(&object) {
                kept.push(object);
            }
            kept
        });
    let mut commands = String::new();
    for (index, object) in kept.iter().take(KEPT_DEPLOYS).enumerate() {
        commands.push_str(&format!("update {DEPLOYED_REFS}{index} {object}\n"));
    }
    for (index, _) in pinned
        .iter()
        .filter(|(index, _)| *index >= kept.len().min(KEPT_DEPLOYS))
    {
        commands.push_str(&format!("delete {DEPLOYED_REFS}{index}\n"));
    }
    // A `gc` killed at its timeout may leave its locks, which would refuse this and every
    // later one: nothing else writes the store now (a project's jobs take turns, and no git
    // run here starts a `gc` of its own).
    for lock in ["gc.pid", "packed-refs.lock"] {
        let _ = std::fs::remove_file(repo.join(lock));
    }
    let update =
        git(&["update-ref", "--stdin"], 60).stdin(zeroize::Zeroizing::new(commands.into_bytes()));
    run_step("update-ref", &update, redactor, &mut quiet).await?;

    // The trees removed are still registered (their HEADs would keep their commits): forget
    // them first.
    run_step(
        "worktree prune",
        &git(&["worktree", "prune"], 60),
        redactor,
        &mut quiet,
    )
    .await?;
    let gc = git(
        &["-c", "pack.threads=1", "gc", "--quiet", "--prune=now"],
        300,
    );
    run_step("gc", &gc, redactor, &mut quiet).await
}

/// The deploy from `checked` failed and `current` stays where it was. Its tree is kept: a
/// deploy that failed halfway (an `up` that recreated some services, a start-first rollout
/// that replaced one before the next failed) leaves containers that bind-mount it. Trees of
/// earlier failures go, so at most the running commit's and the last failure's are kept; the
/// next successful deploy removes every other.
pub fn keep_failed(layout: &Layout, checked: &CheckedOut) {
    let keep = std::fs::canonicalize(&checked.root).ok();
    let Ok(trees) = std::fs::read_dir(layout.trees()) else {
        return;
    };
    for entry in trees.flatten() {
        let path = entry.path();
        if std::fs::canonicalize(&path).ok() != keep {
            remove_unless_current(layout, &path);
        }
    }
}

fn remove_unless_current(layout: &Layout, tree: &Path) {
    let current = std::fs::canonicalize(layout.current()).ok();
    let resolved = std::fs::canonicalize(tree).ok();
    if resolved.is_some() && current != resolved {
        remove_copy(tree);
    }
}

/// Whether the tree of `sha` is a working tree of the store, as the store says (its admin
/// directory has a HEAD and names the tree's `.git`). The tree's own `.git` file is never read:
/// the project's containers may bind-mount the tree and write it, pointing git at a directory
/// of their making, with its own configuration (a filter command git would run on checkout).
fn is_worktree(layout: &Layout, sha: &str) -> bool {
    let admin = layout.tree_admin(sha);
    // git writes the tree's real path (symbolic links resolved).
    let Ok(tree) = std::fs::canonicalize(layout.tree(sha)) else {
        return false;
    };
    admin.join("HEAD").is_file()
        && std::fs::read_to_string(admin.join("gitdir"))
            .is_ok_and(|named| Path::new(named.trim_end_matches('\n')) == tree.join(".git"))
}

/// A token travels over https, or plain http to a loopback host only.
fn token_transport_is_safe(url: &GitUrl) -> bool {
    !url.as_str().starts_with("http://")
        || matches!(url.host(), "localhost" | "::1")
        || url
            .host()
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether ssh's `output` says it refused the server's host key: another key than the pinned
/// one, or no pinned key for that host, port and key type under strict checking.
fn host_key_refused(output: &str) -> bool {
    output.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || output.contains("Host key verification failed")
        || (output.contains("host key is known for") && output.contains("strict checking"))
}

/// git on the object store `repo`, with the arguments ([`global_args`]) and the whole
/// environment ([`environment`]) every git run of the agent has.
fn on_store(
    repo: &Path,
    credentials: &Credentials,
    env: &[(OsString, OsString)],
    args: Vec<OsString>,
    timeout: Duration,
) -> CommandSpec {
    CommandSpec::new(
        "git",
        global_args(repo, credentials).into_iter().chain(args),
    )
    .environment(env.iter().cloned())
    .timeout(timeout)
}

async fn fetch_and_check_out(
    checkout: &GitCheckout,
    layout: &Layout,
    credentials: &Credentials,
    pinned: bool,
    redactor: &Redactor,
    on_line: &mut impl FnMut(String),
) -> Result<(PathBuf, CommitInfo), GitError> {
    let repo = layout.git_dir();
    let env = environment(layout, checkout.url.transport(), credentials, pinned);
    let git = |args, timeout| on_store(&repo, credentials, &env, args, timeout);
    // In a working tree, git is told where its repository is (the store's admin directory of
    // the tree), never left to find it from the tree's `.git` (see `is_worktree`).
    let git_in_tree = |sha: &str, args: Vec<OsString>, timeout: Duration| {
        let mut in_tree: Vec<OsString> = vec!["--git-dir".into(), layout.tree_admin(sha).into()];
        in_tree.extend(["--work-tree".into(), layout.tree(sha).into()]);
        in_tree.extend(args);
        git(in_tree, timeout)
    };
    if !repo.join("HEAD").is_file() {
        private_fs::ensure_private_dir(&repo)?;
        let init = CommandSpec::new("git", ["init", "--quiet", "--bare", "--"])
            .arg(&repo)
            .environment(env.clone())
            .timeout(Duration::from_secs(60));
        run_step("init", &init, redactor, on_line).await?;
    }

    let limit = match checkout.max_bytes {
        0 => DEFAULT_MAX_BYTES,
        limit => limit,
    };
    let timeout = match checkout.timeout_secs {
        0 => DEFAULT_TIMEOUT,
        secs => Duration::from_secs(secs),
    };
    let quick = Duration::from_secs(120);
    // A redeploy's commit may already be in the working copy (an earlier deploy fetched it):
    // then nothing is fetched. Otherwise it is fetched by its id, and where the server does
    // not hand out commits that are not a branch's tip, the ref is fetched deeper instead.
    let have_commit = match &checkout.commit {
        Some(sha) => {
            let exists = git(
                vec![
                    "cat-file".into(),
                    "-e".into(),
                    format!("{sha}^{{commit}}").into(),
                ],
                quick,
            );
            runner::run(&exists, redactor, |_| {}).await?.success()
        }
        None => false,
    };
    if !have_commit {
        let fetched = fetch_limited(
            &git(fetch_args(checkout), timeout),
            &repo,
            limit,
            redactor,
            on_line,
        )
        .await;
        let fetched = match fetched {
            Err(GitError::Failed { output, .. })
                if checkout.commit.is_some() && output.contains("unadvertised object") =>
            {
                let mut deeper = checkout.clone();
                deeper.commit = None;
                let mut args = fetch_args(&deeper);
                if let Some(depth) = args.iter().position(|arg| arg == "1") {
                    args[depth] = "200".into();
                }
                fetch_limited(&git(args, timeout), &repo, limit, redactor, on_line).await
            }
            other => other,
        };
        if let Err(error) = fetched {
            if matches!(error, GitError::TooLarge { .. }) {
                remove_copy(&repo);
            }
            return Err(error);
        }
    }

    let wanted = match &checkout.commit {
        Some(sha) => format!("{sha}^{{commit}}"),
        None => "FETCH_HEAD^{commit}".to_string(),
    };
    let sha = capture(
        "rev-parse",
        &git(
            vec![
                "rev-parse".into(),
                "--verify".into(),
                "--end-of-options".into(),
                wanted.into(),
            ],
            quick,
        ),
        redactor,
    )
    .await?;
    let sha = sha.trim().to_string();
    if !CommitInfo::is_sha(&sha) {
        return Err(GitError::Refused(format!(
            "git named the fetched commit {sha:?}"
        )));
    }
    if let Some(wanted) = &checkout.commit {
        if *wanted != sha {
            return Err(GitError::Refused(format!(
                "asked for commit {wanted} but the repository gave {sha}"
            )));
        }
    }
    // What the checkout would write, before it writes it: a blob that compresses small or
    // many entries sharing trees are small to fetch and large on disk.
    let tree = git(
        vec![
            "ls-tree".into(),
            "-r".into(),
            "-l".into(),
            "-t".into(),
            sha.clone().into(),
            "--".into(),
        ],
        quick,
    );
    let (entries, bytes) = tree_size(&tree, redactor).await?;
    let size = bytes.saturating_add(entries.saturating_mul(ENTRY_BYTES));
    if size > limit || entries > MAX_ENTRIES {
        return Err(GitError::TooLarge { size, limit });
    }
    // The commit's own tree: a tree left by a crash, or the current one (a redeploy of the
    // commit that runs), is checked out again in place; any other is made anew.
    let tree = layout.tree(&sha);
    if !is_worktree(layout, &sha) {
        remove_copy(&tree);
        let prune = git(vec!["worktree".into(), "prune".into()], quick);
        run_step("worktree prune", &prune, redactor, on_line).await?;
        let add = git(
            vec![
                "worktree".into(),
                "add".into(),
                "--quiet".into(),
                "--force".into(),
                "--detach".into(),
                tree.clone().into(),
                sha.clone().into(),
            ],
            quick,
        );
        run_step("worktree add", &add, redactor, on_line).await?;
        if !is_worktree(layout, &sha) {
            return Err(GitError::Refused(format!(
                "git did not register the working tree of {sha} where it was asked to"
            )));
        }
    }
    let checkout_step = git_in_tree(
        &sha,
        vec![
            "checkout".into(),
            "--quiet".into(),
            "--force".into(),
            "--detach".into(),
            sha.clone().into(),
            "--".into(),
        ],
        quick,
    );
    run_step("checkout", &checkout_step, redactor, on_line).await?;
    let clean = git_in_tree(&sha, vec!["clean".into(), "-ffdxq".into()], quick);
    run_step("clean", &clean, redactor, on_line).await?;
    let size = measured(&repo).await.saturating_add(measured(&tree).await);
    if size > limit {
        remove_unless_current(layout, &tree);
        return Err(GitError::TooLarge { size, limit });
    }
    let log = capture(
        "log",
        &git(
            vec![
                "log".into(),
                "-1".into(),
                "--format=%an <%ae>%n%s".into(),
                sha.clone().into(),
                "--".into(),
            ],
            quick,
        ),
        redactor,
    )
    .await?;
    let mut lines = log.lines();
    // Shown in the deploy log and the history: masked like any line a person reads.
    let author = redactor.redact(lines.next().unwrap_or_default());
    let subject = redactor.redact(lines.next().unwrap_or_default());
    Ok((
        tree,
        CommitInfo {
            sha,
            subject: crate::wire::cut(&subject, 1024),
            author: crate::wire::cut(&author, 512),
        },
    ))
}

/// Runs a fetch while watching the working copy's size: over `limit`, the fetch is killed
/// (dropping the run kills git's process group).
async fn fetch_limited(
    fetch: &CommandSpec,
    repo: &Path,
    limit: u64,
    redactor: &Redactor,
    on_line: &mut impl FnMut(String),
) -> Result<(), GitError> {
    let fetched = {
        let run = run_step("fetch", fetch, redactor, on_line);
        tokio::pin!(run);
        let mut watch = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                result = &mut run => break result,
                _ = watch.tick() => {
                    let size = measured(repo).await;
                    if size > limit {
                        break Err(GitError::TooLarge { size, limit });
                    }
                }
            }
        }
    };
    let size = measured(repo).await;
    match fetched {
        Ok(()) if size > limit => Err(GitError::TooLarge { size, limit }),
        other => other,
    }
}

/// Runs one git step, streaming its lines; a non-zero exit is [`GitError::Failed`] with the
/// last lines.
async fn run_step(
    step: &'static str,
    spec: &CommandSpec,
    redactor: &Redactor,
    on_line: &mut impl FnMut(String),
) -> Result<(), GitError> {
    let mut tail = std::collections::VecDeque::new();
    let output = runner::run(spec, redactor, |line| {
        let text = match line {
            OutputLine::Stdout(text) | OutputLine::Stderr(text) => text,
        };
        if tail.len() == 30 {
            tail.pop_front();
        }
        tail.push_back(text.clone());
        on_line(text);
    })
    .await?;
    if output.success() {
        Ok(())
    } else {
        Err(GitError::Failed {
            step,
            exit_code: output.exit_code,
            output: Vec::from(tail).join("\n"),
        })
    }
}

/// Runs a git step that prints what it found, and returns its stdout.
async fn capture(
    step: &'static str,
    spec: &CommandSpec,
    redactor: &Redactor,
) -> Result<String, GitError> {
    let output = runner::run(&spec.clone().read_by_agent(), redactor, |_| {}).await?;
    if output.success() {
        Ok(output.stdout)
    } else {
        Err(GitError::Failed {
            step,
            exit_code: output.exit_code,
            output: output.stderr.trim().to_string(),
        })
    }
}

/// What each entry of a working copy counts for at least (a file or directory takes a block).
const ENTRY_BYTES: u64 = 4096;
/// The most entries a working copy may have.
const MAX_ENTRIES: u64 = 200_000;

/// Entries and blob bytes `git ls-tree -r -l -t` lists, counted as its lines stream.
async fn tree_size(spec: &CommandSpec, redactor: &Redactor) -> Result<(u64, u64), GitError> {
    let (mut entries, mut bytes) = (0u64, 0u64);
    let spec = spec.clone().read_by_agent();
    let output = runner::run(&spec, redactor, |line| {
        if let OutputLine::Stdout(line) = line {
            entries += 1;
            // `<mode> <type> <object> <size>\t<path>`; a tree's size is `-`.
            let size = line
                .split('\t')
                .next()
                .and_then(|meta| meta.split_whitespace().last())
                .and_then(|size| size.parse::<u64>().ok())
                .unwrap_or(0);
            bytes = bytes.saturating_add(size);
        }
    })
    .await?;
    if !output.success() {
        return Err(GitError::Failed {
            step: "ls-tree",
            exit_code: output.exit_code,
            output: output.stderr.trim().to_string(),
        });
    }
    Ok((entries, bytes))
}

/// [`dir_size`] on a blocking thread (a large working copy is a long walk); a walk that
/// panicked counts as too large.
async fn measured(dir: &Path) -> u64 {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || dir_size(&dir))
        .await
        .unwrap_or(u64::MAX)
}

/// Bytes under `dir`, not following symlinks.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.len();
            }
        }
    }
    total
}

fn remove_copy(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %dir.display(), %error, "could not remove a checkout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::source::GitRef;
    use shared::SecretValue;

    fn job(url: &str) -> GitCheckout {
        GitCheckout {
            url: GitUrl::parse(url).unwrap(),
            git_ref: None,
            commit: None,
            subdir: None,
            compose_file: None,
            token: None,
            token_username: None,
            ssh_key: None,
            known_hosts: None,
            max_bytes: 0,
            timeout_secs: 0,
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_url_and_the_ref_come_after_a_double_dash() {
        let mut checkout = job("https://example.com/shop.git");
        checkout.git_ref = Some(GitRef::parse("release/1.2").unwrap());
        let args = strings(&fetch_args(&checkout));
        let dash = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            &args[dash + 1..],
            ["https://example.com/shop.git", "release/1.2"]
        );
        assert!(args.contains(&"--depth".to_string()));

        let mut pinned = checkout.clone();
        pinned.commit = Some("a".repeat(40));
        assert_eq!(
            strings(&fetch_args(&pinned)).last().unwrap(),
            &"a".repeat(40)
        );
        assert_eq!(
            strings(&fetch_args(&job("git@h:r.git"))).last().unwrap(),
            "HEAD"
        );
    }

    #[test]
    fn credentials_never_reach_the_argv_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), ProjectId(uuid::Uuid::new_v4()));
        let mut checkout = job("https://example.com/shop.git");
        checkout.token = Some(SecretValue::new("ghp_SuperSecretToken123"));
        checkout.ssh_key = Some(SecretValue::new(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----",
        ));
        let credentials = Credentials::write(&checkout, dir.path()).unwrap();
        let args = strings(&global_args(&layout.repo(), &credentials))
            .into_iter()
            .chain(strings(&fetch_args(&checkout)))
            .collect::<Vec<_>>()
            .join(" ");
        let env = environment(&layout, Transport::Ssh, &credentials, false)
            .into_iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let basic = basic_auth("x-access-token", "ghp_SuperSecretToken123");
        for secret in [
            "ghp_SuperSecretToken123",
            basic.as_str(),
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
        ] {
            assert!(!args.contains(secret), "{args}");
            assert!(!env.contains(secret), "{env}");
        }
        assert!(args.contains("include.path="), "{args}");
        assert!(env.contains("GIT_CONFIG_NOSYSTEM=1"));
        assert!(env.contains("GIT_TERMINAL_PROMPT=0"));
        assert!(env.contains("StrictHostKeyChecking=accept-new"));
        assert!(env.contains("IdentitiesOnly=yes"));
        assert!(
            !env.contains("STAGELY"),
            "nothing of the agent's environment"
        );
    }

    #[test]
    fn a_token_follows_no_redirect_and_never_travels_over_plain_http_to_another_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut checkout = job("https://example.com/shop.git");
        checkout.token = Some(SecretValue::new("ghp_SuperSecretToken123"));
        let credentials = Credentials::write(&checkout, dir.path()).unwrap();
        let args = strings(&global_args(dir.path(), &credentials));
        assert!(
            args.iter().any(|arg| arg == "http.followRedirects=false"),
            "{args:?}"
        );
        let anonymous = Credentials::write(&job("https://example.com/shop.git"), dir.path());
        assert!(!strings(&global_args(dir.path(), &anonymous.unwrap()))
            .iter()
            .any(|arg| arg.starts_with("http.followRedirects")));
        for (url, safe) in [
            ("https://example.com/shop.git", true),
            ("http://example.com/shop.git", false),
            ("http://10.0.0.1:8080/shop.git", false),
            ("http://127.0.0.1:8080/shop.git", true),
            ("http://localhost/shop.git", true),
            ("http://[::1]:80/shop.git", true),
        ] {
            let url = GitUrl::parse(url).unwrap();
            assert_eq!(token_transport_is_safe(&url), safe, "{url:?}");
        }
    }

    #[test]
    fn a_pinned_host_key_is_the_only_one_ssh_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), ProjectId(uuid::Uuid::new_v4()));
        let credentials = Credentials::write(&job("git@h:r.git"), dir.path()).unwrap();
        let ssh_command = |pinned| {
            environment(&layout, Transport::Ssh, &credentials, pinned)
                .into_iter()
                .find(|(key, _)| key == "GIT_SSH_COMMAND")
                .map(|(_, value)| value.to_string_lossy().into_owned())
                .unwrap()
        };
        let strict = ssh_command(true);
        assert!(strict.contains("StrictHostKeyChecking=yes"), "{strict}");
        assert!(!strict.contains("accept-new"), "{strict}");
        assert!(ssh_command(false).contains("StrictHostKeyChecking=accept-new"));
        // What OpenSSH 9 says for a key of another type, or a port the pin does not name.
        assert!(host_key_refused(
            "No ECDSA host key is known for [h]:2222 and you have requested strict checking.\n\
             Host key verification failed.\nfatal: Could not read from remote repository."
        ));
        assert!(host_key_refused(
            "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!\nHost key verification failed."
        ));
        assert!(!host_key_refused("Permission denied (publickey)."));
    }

    #[test]
    fn credential_files_are_private_and_removed_on_drop_and_by_the_sweep() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut checkout = job("https://example.com/shop.git");
        checkout.token = Some(SecretValue::new("ghp_SuperSecretToken123"));
        checkout.ssh_key = Some(SecretValue::new("key material"));
        let credentials = Credentials::write(&checkout, dir.path()).unwrap();
        let paths = [
            credentials.ssh_key.clone().unwrap(),
            credentials.http_config.clone().unwrap(),
        ];
        for path in &paths {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        drop(credentials);
        for path in &paths {
            assert!(!path.exists(), "{} left behind", path.display());
        }

        let crashed = Credentials::write(&checkout, dir.path()).unwrap();
        std::mem::forget(crashed);
        // A run that died between writing a credential's temporary and renaming it.
        std::fs::write(
            dir.path().join(format!(
                "1.0000abcd.http-config{CREDENTIAL_SUFFIX}.12345678.tmp"
            )),
            "[http]\n\textraHeader = Authorization: Basic c2VjcmV0\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("jobs.json.0badc0de.tmp"), "{}").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
        assert_eq!(sweep(dir.path()), 3);
        // Another writer's temporary is its own sweep's.
        std::fs::remove_file(dir.path().join("jobs.json.0badc0de.tmp")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Two MiB of zeros compress to almost nothing: the fetch is small, the checkout is not.
    #[tokio::test]
    async fn the_checkout_size_counts_blobs_as_written_and_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "{args:?}");
        };
        git(&["init", "--quiet"]);
        std::fs::create_dir(repo.join("d")).unwrap();
        std::fs::write(repo.join("d/zeros"), vec![0u8; 2 * 1024 * 1024]).unwrap();
        std::fs::write(repo.join("small"), "x").unwrap();
        git(&["add", "."]);
        git(&["commit", "--quiet", "-m", "zeros"]);
        let spec = CommandSpec::new("git", ["ls-tree", "-r", "-l", "-t", "HEAD", "--"])
            .current_dir(repo)
            .timeout(Duration::from_secs(30));
        let (entries, bytes) = tree_size(&spec, &Redactor::new(std::iter::empty::<&str>()))
            .await
            .unwrap();
        assert_eq!(entries, 3, "d, d/zeros, small");
        assert_eq!(bytes, 2 * 1024 * 1024 + 1);
    }

    #[test]
    fn paths_in_the_ssh_command_are_quoted_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
