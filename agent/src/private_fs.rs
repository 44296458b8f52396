//! The agent's private state on disk: where it lives, and the one way files are written there.
//!
//! The agent runs as root and keeps secrets (its token, override files with a project's secret
//! values) and its job ledger in a state directory. A directory another local user owns or can
//! write to would let them plant a symlink where the agent is about to write (and have root
//! overwrite any file) or swap an override file before Compose reads it. So:
//!
//! - the default is never a shared temporary directory: `/var/lib/stagely-agent` for root,
//!   `$XDG_STATE_HOME/stagely-agent` (else `~/.local/state/stagely-agent`) for anyone else
//!   ([`state_dir`]);
//! - [`ensure_private_dir`] creates what is missing (0700) and refuses a directory that is a
//!   symlink, belongs to another uid, or that group or others can write to, saying how to fix it;
//! - [`write_private_file`] checks the directory again through the descriptor it writes with,
//!   creates a temporary file beside the target with `O_CREAT|O_EXCL|O_NOFOLLOW` (0600), syncs it
//!   and renames it into place, so a reader sees the old file or the whole new one and nothing
//!   planted in the directory is ever followed;
//! - what a crash leaves (a temporary not yet renamed, override files in the directories older
//!   agents used, [`old_private_dirs`]) is removed at the next start through the same checked
//!   directory descriptor, and only if it belongs to the agent's uid ([`remove_leftovers`]).

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Every temporary file's name ends with `.<8 hex digits>` and this.
const TEMPORARY_SUFFIX: &str = ".tmp";

/// Why a private directory or a file in it cannot be used; every message names the path.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    #[error(
        "{} is not a directory of its own (it is a symlink or a file): the agent keeps private \
         files only in a real directory. Remove it (the agent creates it, 0700) or choose another \
         path",
        path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "{} belongs to uid {owner}, not to this agent's uid {uid}: another user could have put \
         files there. Remove it (the agent creates it, 0700), or if it is yours: chown {uid} {}",
        path.display(),
        path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "{} can be written by other users (mode {mode:o}): they could swap the files in it. \
         Check what it holds, then: chmod 700 {}",
        path.display(),
        path.display()
    )]
    OpenToOthers { path: PathBuf, mode: u32 },
    #[error("preparing the private directory {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// The agent's state directory: `STAGELY_STATE_DIR` when set, else `/var/lib/stagely-agent` for
/// root, else `$XDG_STATE_HOME/stagely-agent`, else `$HOME/.local/state/stagely-agent`. `None`
/// when none of these applies (no absolute `XDG_STATE_HOME` or `HOME`). `env` looks a variable
/// up, so this is the whole rule without touching the process's environment.
pub fn state_dir(uid: u32, env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name| {
        env(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = set("STAGELY_STATE_DIR") {
        return Some(dir);
    }
    if uid == 0 {
        return Some(PathBuf::from("/var/lib/stagely-agent"));
    }
    // The XDG base directory spec: a relative path is invalid and is ignored.
    if let Some(state_home) = set("XDG_STATE_HOME").filter(|dir| dir.is_absolute()) {
        return Some(state_home.join("stagely-agent"));
    }
    set("HOME")
        .filter(|home| home.is_absolute())
        .map(|home| home.join(".local/state/stagely-agent"))
}

/// The effective uid: who owns what the agent creates.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Creates `path` (and missing parents, 0700) if needed, then checks that it is a real directory
/// (not a symlink), owned by this process's uid, and that neither group nor others can write to
/// it. A directory others can only read or enter is narrowed to 0700.
///
/// Call it at start for the state directory and its `private/`; [`write_private_file`] repeats
/// the checks (without narrowing) each time it writes.
pub fn ensure_private_dir(path: &Path) -> Result<(), PrivateDirError> {
    let created = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path);
    // A symlink or a file in the way is reported as such by the checks.
    if let Err(source) = created {
        if std::fs::symlink_metadata(path).is_err() {
            return Err(open_error(path)(source));
        }
    }
    let directory = open_private_dir(path)?;
    let mode = directory
        .metadata()
        .map_err(open_error(path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %path.display(), mode = format!("{mode:o}"), "other users could look into the private directory; setting it to 0700");
        directory
            .set_permissions(Permissions::from_mode(0o700))
            .map_err(open_error(path))?;
    }
    Ok(())
}

/// Checks, without creating or changing anything, that `path` is a real directory owned by this
/// process's uid that neither group nor others can write to.
pub fn check_private_dir(path: &Path) -> Result<(), PrivateDirError> {
    open_private_dir(path).map(drop)
}

/// Writes `bytes` to the file at `path` (0600), atomically, through nothing that was planted
/// in its directory, after checking that directory as [`ensure_private_dir`] does (it is not
/// created here).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), PrivateDirError> {
    write_with_temporary(path, bytes, rand::random())
}

/// [`write_private_file`] through the temporary `<name>.<random as 8 hex digits>.tmp`.
fn write_with_temporary(path: &Path, bytes: &[u8], random: u32) -> Result<(), PrivateDirError> {
    let write_error = |source| PrivateDirError::Write {
        path: path.to_owned(),
        source,
    };
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return Err(write_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path with a UTF-8 name",
        )));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let directory = open_private_dir(dir)?;
    let temporary = format!("{name}.{random:08x}{TEMPORARY_SUFFIX}");
    let mut file = create_new(&directory, &temporary).map_err(write_error)?;
    // From here the temporary is the agent's own: whatever fails, it is removed. Exactly 0600
    // whatever the umask.
    let written = file
        .set_permissions(Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .and_then(|()| rename(&directory, &temporary, name));
    if let Err(source) = written {
        if let Err(error) = unlink(&directory, &temporary) {
            tracing::warn!(dir = %dir.display(), %temporary, %error, "could not remove a temporary file; the next start removes it");
        }
        return Err(write_error(source));
    }
    // The rename is durable once the directory is synced; a failure here loses nothing now.
    if let Err(error) = directory.sync_all() {
        tracing::debug!(dir = %dir.display(), %error, "could not sync the private directory");
    }
    Ok(())
}

/// The name a temporary file left by [`write_private_file`] was meant to become, or `None` when
/// `name` is not such a temporary (for sweeping what a crash left behind).
pub fn temporary_target(name: &str) -> Option<&str> {
    let (target, random) = name.strip_suffix(TEMPORARY_SUFFIX)?.rsplit_once('.')?;
    let is_random = random.len() == 8 && random.chars().all(|c| c.is_ascii_hexdigit());
    (is_random && !target.is_empty()).then_some(target)
}

/// Removes the temporaries (`<target>.<8 hex digits>.tmp`) that [`write_private_file`] left in
/// `dir` when the agent died between creating one and renaming it into place: they may hold a
/// token. Returns how many; a directory the agent could not have written to is left alone.
/// Call it at start, before anything writes `target`.
pub fn sweep_temporaries(dir: &Path, target: &str) -> Result<usize, PrivateDirError> {
    remove_leftovers(dir, |name| temporary_target(name) == Some(target))
}

/// Removes the entries of `dir` whose names `is_leftover` picks, if they belong to this uid: a
/// file, or a symlink (removed, never followed); directories stay. `dir` is checked as
/// [`check_private_dir`] does, and entries are removed through that checked descriptor.
/// Returns how many were removed; one that cannot be is logged and left.
pub fn remove_leftovers(
    dir: &Path,
    is_leftover: impl Fn(&str) -> bool,
) -> Result<usize, PrivateDirError> {
    let directory = open_private_dir(dir)?;
    let uid = current_uid();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(open_error(dir))?.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // `DirEntry::metadata` does not follow a symlink.
        let is_ours = entry
            .metadata()
            .is_ok_and(|metadata| !metadata.is_dir() && metadata.uid() == uid);
        if !is_ours || !is_leftover(&name) {
            continue;
        }
        match unlink(&directory, &name) {
            Ok(()) => removed += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %dir.join(&name).display(), %error, "could not remove a leftover file");
            }
        }
    }
    Ok(removed)
}

/// The private directories older agents used by default, before [`state_dir`]: `$TMPDIR` (else
/// `/tmp`) `/stagely-<uid>/private`, and `$XDG_RUNTIME_DIR/stagely/private`. Override files they
/// left there may still hold secret values.
pub fn old_private_dirs(uid: u32, env: impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let absolute = |name| env(name).map(PathBuf::from).filter(|dir| dir.is_absolute());
    let temp = absolute("TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"));
    let mut dirs = vec![temp.join(format!("stagely-{uid}")).join("private")];
    dirs.extend(absolute("XDG_RUNTIME_DIR").map(|runtime| runtime.join("stagely/private")));
    dirs
}

/// Opens `path` as a directory without following a symlink and checks it through that
/// descriptor (its owner, and that group and others cannot write to it), so what was checked is
/// what is written into.
fn open_private_dir(path: &Path) -> Result<File, PrivateDirError> {
    let directory = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => PrivateDirError::NotADirectory {
                path: path.to_owned(),
            },
            _ => PrivateDirError::Open {
                path: path.to_owned(),
                source,
            },
        })?;
    let metadata = directory.metadata().map_err(open_error(path))?;
    let uid = current_uid();
    if metadata.uid() != uid {
        return Err(PrivateDirError::NotOwned {
            path: path.to_owned(),
            owner: metadata.uid(),
            uid,
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PrivateDirError::OpenToOthers {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(directory)
}

fn open_error(path: &Path) -> impl Fn(io::Error) -> PrivateDirError + '_ {
    move |source| PrivateDirError::Open {
        path: path.to_owned(),
        source,
    }
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a file name with a NUL byte"))
}

/// `openat(dir, name, O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, 0600)`: fails on anything
/// already at `name`, a symlink included, instead of writing through it. The umask may narrow
/// the mode: the caller sets it, and removes the file if that or anything after it fails.
fn create_new(dir: &File, name: &str) -> io::Result<File> {
    let name = c_name(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string, both alive for the
    // call; openat returns a new descriptor or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `renameat(dir, from, dir, to)`: replaces whatever is at `to` (a symlink is replaced, never
/// followed).
fn rename(dir: &File, from: &str, to: &str) -> io::Result<()> {
    let (from, to) = (c_name(from)?, c_name(to)?);
    let fd = dir.as_raw_fd();
    // SAFETY: both names are NUL-terminated strings alive for the call; `fd` is open.
    if unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unlink(dir: &File, name: &str) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: `name` is a NUL-terminated string alive for the call; the descriptor is open.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const OTHER_UID: u32 = 65534;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    /// A uid, its environment, and the state directory it gets.
    type Case<'a> = (u32, &'a [(&'a str, &'a str)], Option<&'a str>);

    #[test]
    fn the_state_directory_is_never_a_shared_temporary_one() {
        let cases: [Case; 9] = [
            (0, &[], Some("/var/lib/stagely-agent")),
            (
                0,
                &[
                    ("XDG_RUNTIME_DIR", "/run/user/0"),
                    ("XDG_STATE_HOME", "/root/.local/state"),
                    ("HOME", "/root"),
                ],
                Some("/var/lib/stagely-agent"),
            ),
            (
                0,
                &[("STAGELY_STATE_DIR", "/srv/agent")],
                Some("/srv/agent"),
            ),
            (
                1000,
                &[("STAGELY_STATE_DIR", "/srv/agent"), ("HOME", "/home/ada")],
                Some("/srv/agent"),
            ),
            (
                1000,
                &[("XDG_STATE_HOME", "/home/ada/state"), ("HOME", "/home/ada")],
                Some("/home/ada/state/stagely-agent"),
            ),
            (
                1000,
                &[("XDG_RUNTIME_DIR", "/run/user/1000"), ("HOME", "/home/ada")],
                Some("/home/ada/.local/state/stagely-agent"),
            ),
            (
                1000,
                &[("XDG_STATE_HOME", "relative/state"), ("HOME", "/home/ada")],
                Some("/home/ada/.local/state/stagely-agent"),
            ),
            (1000, &[("STAGELY_STATE_DIR", ""), ("HOME", "")], None),
            (1000, &[("XDG_RUNTIME_DIR", "/run/user/1000")], None),
        ];
        for (uid, vars, expected) in cases {
            assert_eq!(
                state_dir(uid, env(vars)),
                expected.map(PathBuf::from),
                "uid {uid}, {vars:?}"
            );
        }
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("state/private");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.path().join("state")), 0o700);
        ensure_private_dir(&dir).unwrap();
    }

    #[test]
    fn a_directory_another_uid_owns_is_refused_naming_it_and_the_fix() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        std::os::unix::fs::chown(&dir, Some(OTHER_UID), None).unwrap();

        let error = ensure_private_dir(&dir).unwrap_err();
        assert!(matches!(error, PrivateDirError::NotOwned { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains(&dir.display().to_string()), "{message}");
        assert!(message.contains(&format!("uid {OTHER_UID}")), "{message}");
        assert!(message.contains("chown"), "{message}");

        let error = write_private_file(&dir.join("jobs.json"), b"[]").unwrap_err();
        assert!(matches!(error, PrivateDirError::NotOwned { .. }), "{error}");
        assert!(names(&dir).is_empty());
    }

    #[test]
    fn a_directory_group_or_others_can_write_to_is_refused_and_left_as_it_is() {
        for open in [0o770, 0o707, 0o777, 0o1777, 0o720] {
            let base = tempfile::tempdir().unwrap();
            let dir = base.path().join("state");
            std::fs::create_dir(&dir).unwrap();
            chmod(&dir, open);

            let error = ensure_private_dir(&dir).unwrap_err();
            assert!(
                matches!(error, PrivateDirError::OpenToOthers { .. }),
                "{open:o}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains(&dir.display().to_string()), "{message}");
            assert!(
                message.contains(&format!("chmod 700 {}", dir.display())),
                "{message}"
            );
            assert!(write_private_file(&dir.join("jobs.json"), b"[]").is_err());
            assert_eq!(mode(&dir), open, "not quietly taken over");
            assert!(names(&dir).is_empty());
        }
    }

    #[test]
    fn a_directory_others_can_only_read_is_narrowed_to_0700() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        ensure_private_dir(dir.path()).unwrap();
        assert_eq!(mode(dir.path()), 0o700);
    }

    #[test]
    fn a_symlink_or_a_file_is_not_a_private_directory() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target");
        std::fs::create_dir(&target).unwrap();
        chmod(&target, 0o700);
        let link = base.path().join("link");
        symlink(&target, &link).unwrap();
        let file = base.path().join("file");
        std::fs::write(&file, "").unwrap();

        for path in [&link, &file] {
            let error = ensure_private_dir(path).unwrap_err();
            assert!(
                matches!(error, PrivateDirError::NotADirectory { .. }),
                "{error}"
            );
            assert!(error.to_string().contains(&path.display().to_string()));
            let error = write_private_file(&path.join("jobs.json"), b"[]").unwrap_err();
            assert!(
                matches!(error, PrivateDirError::NotADirectory { .. }),
                "{error}"
            );
        }
        assert!(names(&target).is_empty(), "nothing went through the link");
    }

    #[test]
    fn written_files_are_0600_and_replace_the_old_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.json");
        write_private_file(&path, b"first").unwrap();
        assert_eq!(mode(&path), 0o600);
        write_private_file(&path, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(names(dir.path()), ["jobs.json"], "no temporary left behind");
    }

    #[test]
    fn a_symlink_planted_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, dir.path().join("agent.token")).unwrap();

        let path = dir.path().join("agent.token");
        write_private_file(&path, b"stg_secret").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "stg_secret");
    }

    #[test]
    fn creating_a_file_never_follows_or_reuses_what_is_already_at_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, dir.path().join("planted")).unwrap();
        std::fs::write(dir.path().join("existing"), "old").unwrap();
        let directory = open_private_dir(dir.path()).unwrap();

        for name in ["planted", "existing"] {
            let error = create_new(&directory, name).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{name}");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("existing")).unwrap(),
            "old"
        );
    }

    #[test]
    fn a_path_that_names_no_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for path in [dir.path().join(".."), PathBuf::from("/")] {
            let error = write_private_file(&path, b"x").unwrap_err();
            assert!(matches!(error, PrivateDirError::Write { .. }), "{path:?}");
        }
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn temporaries_are_recognised_with_the_name_they_stand_for() {
        let cases = [
            ("jobs.json.0badc0de.tmp", Some("jobs.json")),
            (
                "shop.42.0000abcd.docker-compose.stagely.yml.12345678.tmp",
                Some("shop.42.0000abcd.docker-compose.stagely.yml"),
            ),
            ("jobs.json.tmp", None),
            ("jobs.json.nothex!!.tmp", None),
            (".0badc0de.tmp", None),
            ("jobs.json", None),
        ];
        for (name, expected) in cases {
            assert_eq!(temporary_target(name), expected, "{name}");
        }
    }

    #[test]
    fn a_symlink_planted_at_the_very_temporary_name_a_write_picks_is_neither_followed_nor_removed()
    {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let planted = dir.path().join("agent.token.0badc0de.tmp");
        symlink(&victim, &planted).unwrap();

        let path = dir.path().join("agent.token");
        let error = write_with_temporary(&path, b"stg_secret", 0x0bad_c0de).unwrap_err();
        let PrivateDirError::Write { source, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(source.kind(), io::ErrorKind::AlreadyExists, "{error}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            std::fs::symlink_metadata(&planted).unwrap().is_symlink(),
            "what the agent did not create is not its to remove"
        );
        assert!(!path.exists(), "nothing half-written took the file's place");
        assert!(!error.to_string().contains("stg_secret"), "{error}");
    }

    #[test]
    fn a_write_that_fails_after_creating_its_temporary_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way: the rename into place fails once the temporary is written.
        std::fs::create_dir(dir.path().join("jobs.json")).unwrap();
        let error = write_private_file(&dir.path().join("jobs.json"), b"[]").unwrap_err();
        assert!(matches!(error, PrivateDirError::Write { .. }), "{error}");
        assert_eq!(names(dir.path()), ["jobs.json"]);
    }

    #[test]
    fn temporaries_a_crash_left_beside_a_file_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "jobs.json",
            "jobs.json.0badc0de.tmp",
            "jobs.json.12345678.tmp",
            "jobs.json.tmp",
            "agent.token.0badc0de.tmp",
            "notes.tmp",
        ] {
            std::fs::write(dir.path().join(name), "stg_secret").unwrap();
        }
        std::fs::create_dir(dir.path().join("jobs.json.deadbeef.tmp")).unwrap();

        assert_eq!(sweep_temporaries(dir.path(), "jobs.json").unwrap(), 2);
        assert_eq!(sweep_temporaries(dir.path(), "agent.token").unwrap(), 1);
        assert_eq!(
            names(dir.path()),
            [
                "jobs.json",
                "jobs.json.deadbeef.tmp",
                "jobs.json.tmp",
                "notes.tmp"
            ]
        );
        assert_eq!(sweep_temporaries(dir.path(), "jobs.json").unwrap(), 0);
    }

    #[test]
    fn temporaries_are_not_swept_from_a_directory_the_agent_could_not_have_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jobs.json.0badc0de.tmp"), "x").unwrap();
        chmod(dir.path(), 0o777);
        let error = sweep_temporaries(dir.path(), "jobs.json").unwrap_err();
        assert!(
            matches!(error, PrivateDirError::OpenToOthers { .. }),
            "{error}"
        );
        assert_eq!(names(dir.path()), ["jobs.json.0badc0de.tmp"]);
    }

    #[test]
    fn only_files_of_the_agents_own_uid_are_removed_as_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["mine.tmp", "theirs.tmp"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        std::os::unix::fs::chown(dir.path().join("theirs.tmp"), Some(OTHER_UID), None).unwrap();
        let victim = tempfile::NamedTempFile::new().unwrap();
        symlink(victim.path(), dir.path().join("link.tmp")).unwrap();

        let removed = remove_leftovers(dir.path(), |name| name.ends_with(".tmp")).unwrap();
        assert_eq!(
            removed, 2,
            "its own file and the symlink (not what it points to)"
        );
        assert_eq!(names(dir.path()), ["theirs.tmp"]);
        assert!(victim.path().exists());
    }

    /// A uid, its environment, and the private directories older agents gave it.
    type OldCase<'a> = (u32, &'a [(&'a str, &'a str)], &'a [&'a str]);

    #[test]
    fn the_places_older_agents_kept_override_files_by_default_are_known() {
        let cases: [OldCase; 3] = [
            (0, &[], &["/tmp/stagely-0/private"]),
            (
                1000,
                &[
                    ("TMPDIR", "/var/tmp"),
                    ("XDG_RUNTIME_DIR", "/run/user/1000"),
                ],
                &[
                    "/var/tmp/stagely-1000/private",
                    "/run/user/1000/stagely/private",
                ],
            ),
            (
                0,
                &[("TMPDIR", ""), ("XDG_RUNTIME_DIR", "relative")],
                &["/tmp/stagely-0/private"],
            ),
        ];
        for (uid, vars, expected) in cases {
            let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
            assert_eq!(old_private_dirs(uid, env(vars)), expected, "{vars:?}");
        }
    }
}
