//! Where a compose file may point on the host when the agent is confined to
//! `STAGELY_ALLOWED_ROOTS`.
//!
//! Compose reads more of the host than the files it is handed, on the agent's behalf and with
//! its rights. When the agent is confined, every key that names a host path must resolve inside
//! an allowed root, as the project directory and the included files must:
//!
//! - in each service: `env_file`, `label_file`, `extends.file` (and then the extended service's
//!   own paths, file after file), `build` (its context, `dockerfile` and
//!   `additional_contexts`, unless one is a remote form the builder fetches: a git or HTTP URL,
//!   `docker-image://`, `service:`; the directory of an `oci-layout://` is checked) and the
//!   source of every bind mount in `volumes`, short (`./src:/dst:ro`) or long
//!   (`{type: bind, source: …}`); a named volume is not a path;
//! - each `include` entry's files, `project_directory` and `env_file` (see [`super`]); `file` of
//!   each top-level secret and config; `device` of a top-level volume the local driver mounts
//!   from the host: a bind mount, or a device of any file system but the network ones (`nfs`,
//!   `cifs`, …) and `tmpfs`, whose device must be an absolute path; an `overlay` volume, whose
//!   options name host directories, is refused;
//! - the `.env` Compose reads for its variables: the project's, and for an `include` entry
//!   without `env_file`, the one in the entry's project directory.
//!
//! Each path is resolved the way Compose resolves it, then the way the kernel would: `~` is the
//! agent's home; a relative path starts from the base directory of the file it is written in
//! (see [`super`]), or of the extended file for `extends`; the result is cleaned lexically, as
//! Compose cleans it, and then every symlink along it is followed, also on the way to a part
//! that does not exist yet. A path written with a variable (`${DATA}`) is refused: its value
//! comes from `.env` or the environment when Compose runs, and a check cannot vouch for what it
//! does not see.
//!
//! For a Git checkout ([`BindMounts::ReadOnly`]), every bind mount must also be read-only: a
//! container that could write the checkout could change what the next deploy reads.
//!
//! This confines what Compose reads and mounts by path, nothing more: the README
//! (`STAGELY_ALLOWED_ROOTS`) lists what it does not cover.

use super::{canonicalize, kind, AllowedRoots, BindMounts, ComposeError, Documents};
use serde_yaml::{Mapping, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// How long a chain of `extends` across files may be.
const MAX_EXTENDS_DEPTH: usize = 16;

/// How many symlinks resolving one path may follow (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// How many paths one project may have resolved: a file's paths are resolved again for each
/// directory it is read with (up to [`super::MAX_FILES_READ`]), each through up to
/// [`MAX_SYMLINKS`] links, so the work is bounded here rather than per file. Real projects name
/// a few dozen.
const MAX_PATHS_CHECKED: usize = 20_000;

/// Why a path cannot be checked, for [`ComposeError::UncheckablePath`].
const VARIABLE: &str = "it is built from variables, whose values Compose reads from .env or the \
                        environment when it runs; write the path without variables";
const NO_HOME: &str = "it starts with `~` and the agent has no absolute HOME to resolve it against";
const RELATIVE_DEVICE: &str = "it is not a bind mount, so the Docker daemon opens it from its own \
                               working directory; write an absolute path";
const OVERLAY: &str = "an overlay volume mounts the host directories its options name, which the \
                       agent does not check";

/// The file systems whose `device` names something on the network, or nothing.
const NOT_HOST_DEVICES: [&str; 6] = ["tmpfs", "nfs", "nfs4", "cifs", "smb3", "ramfs"];

/// The build contexts a builder fetches rather than reads from the host, as Compose and buildx
/// spell them.
const REMOTE_CONTEXTS: [&str; 6] = [
    "http://",
    "https://",
    "git://",
    "ssh://",
    "git@",
    "github.com/",
];

/// What else an entry of `additional_contexts` may name instead of a host path: an image, or
/// another service's image.
const OTHER_IMAGES: [&str; 2] = ["docker-image://", "service:"];

/// The allowed roots and what resolving paths needs; exists only when roots are configured.
pub(super) struct Confinement<'a> {
    roots: AllowedRoots<'a>,
    /// The agent's home directory, which Compose gives to `~`.
    home: Option<PathBuf>,
    /// The project directory, where Compose (and the builder it starts) runs.
    project_dir: PathBuf,
    /// Extended services already checked, as (file, the directory its paths start from,
    /// service).
    extended: RefCell<HashSet<(PathBuf, PathBuf, String)>>,
    /// How many paths have been resolved, toward [`MAX_PATHS_CHECKED`].
    checked: Cell<usize>,
    /// Whether a bind mount may be writable.
    bind_mounts: BindMounts,
}

impl<'a> Confinement<'a> {
    pub(super) fn new(
        roots: AllowedRoots<'a>,
        home: Option<&Path>,
        project_dir: &Path,
        bind_mounts: BindMounts,
    ) -> Self {
        Self {
            roots,
            home: home.filter(|home| home.is_absolute()).map(clean),
            project_dir: project_dir.to_owned(),
            extended: RefCell::new(HashSet::new()),
            checked: Cell::new(0),
            bind_mounts,
        }
    }

    /// Refuses a bind mount (of `written`, at `key` of `file`) that is not read-only, when
    /// bind mounts must be.
    fn read_only(
        &self,
        file: &Path,
        key: &str,
        written: &str,
        read_only: bool,
    ) -> Result<(), ComposeError> {
        if self.bind_mounts == BindMounts::ReadOnly && !read_only {
            return Err(ComposeError::WritableBind {
                file: file.to_owned(),
                key: key.to_owned(),
                written: written.to_owned(),
            });
        }
        Ok(())
    }

    /// The `.env` in `dir`, which Compose reads for the variables of the project (then `file`
    /// is the project directory) or of an include entry of `file`; `written` is how to name it.
    /// A symlink out of the roots would hand another file to Compose's parser, and its values
    /// to the project's containers.
    pub(super) fn check_dotenv(
        &self,
        file: &Path,
        written: &str,
        dir: &Path,
    ) -> Result<(), ComposeError> {
        self.confine(file, "default env file", written, &dir.join(".env"))
    }

    /// Checks every host path `top`, the document of `file`, names; its relative paths start
    /// from `base`. Extended files are read through `documents`.
    pub(super) fn check_file(
        &self,
        documents: &Documents,
        file: &Path,
        base: &Path,
        top: &Mapping,
    ) -> Result<(), ComposeError> {
        if let Some(services) = mapping(file, "services", top.get("services"))? {
            for (name, service) in services {
                let Some(name) = name.as_str() else {
                    continue;
                };
                // A service extended from the same file is checked in this loop anyway.
                if let Some(Extends {
                    file: Some(extended),
                    service,
                }) = self.check_service(file, base, name, service)?
                {
                    self.check_extended(documents, &extended, &service, 1)?;
                }
            }
        }

        if let Some(Value::Sequence(entries)) = top.get("include").map(untag) {
            for entry in entries {
                if let Value::Mapping(entry) = untag(entry) {
                    for env_file in path_list(file, "include.env_file", entry.get("env_file"))? {
                        self.check(file, "include.env_file", env_file, base)?;
                    }
                }
            }
        }

        for section in ["secrets", "configs"] {
            let Some(items) = mapping(file, section, top.get(section))? else {
                continue;
            };
            for (name, item) in items {
                if let Value::Mapping(item) = untag(item) {
                    if let Some(path) = item.get("file") {
                        let key = format!("{section}.{}.file", key_text(name));
                        self.check(file, &key, string(file, &key, path)?, base)?;
                    }
                }
            }
        }

        if let Some(volumes) = mapping(file, "volumes", top.get("volumes"))? {
            for (name, volume) in volumes {
                if let Value::Mapping(volume) = untag(volume) {
                    self.check_volume(file, base, &key_text(name), volume)?;
                }
            }
        }
        Ok(())
    }

    /// A top-level volume `name`: what the local driver mounts from the host.
    fn check_volume(
        &self,
        file: &Path,
        base: &Path,
        name: &str,
        volume: &Mapping,
    ) -> Result<(), ComposeError> {
        let local = match volume.get("driver").map(untag) {
            None | Some(Value::Null) => true,
            Some(driver) => driver
                .as_str()
                .is_some_and(|driver| driver == "local" || driver.contains('$')),
        };
        let Some(Value::Mapping(options)) = volume.get("driver_opts").map(untag) else {
            return Ok(());
        };
        if !local {
            return Ok(());
        }
        let key = |option: &str| format!("volumes.{name}.driver_opts.{option}");
        let text = |option: &str| -> Result<Option<&str>, ComposeError> {
            options
                .get(option)
                .map(|value| string(file, &key(option), value))
                .transpose()
        };
        let o = text("o")?;
        let bind = o.is_some_and(|o| o.contains("bind") || o.contains('$'));
        let device = text("device")?;
        if let Some(device) = device {
            // Mounted from the host, whatever its type: read-only only with `ro` among its
            // options.
            let read_only = o.is_some_and(|o| o.split(',').any(|option| option.trim() == "ro"));
            self.read_only(file, &key("device"), device, read_only)?;
        }
        if bind {
            // Relative to the file, as Compose resolves a bind device.
            if let Some(device) = device {
                self.check(file, &key("device"), device, base)?;
            }
            return Ok(());
        }
        match text("type")? {
            Some(kind) if kind.contains('$') => {
                return Err(uncheckable(file, &key("type"), kind, VARIABLE))
            }
            Some("overlay") => return Err(uncheckable(file, &key("type"), "overlay", OVERLAY)),
            Some(kind) if NOT_HOST_DEVICES.contains(&kind) => return Ok(()),
            _ => {}
        }
        match device {
            None => Ok(()),
            // Docker expands no `~` here: a device is absolute or taken as relative.
            Some(device) if device.starts_with('/') => {
                self.check(file, &key("device"), device, base).map(drop)
            }
            Some(device) if device.contains('$') => {
                Err(uncheckable(file, &key("device"), device, VARIABLE))
            }
            Some(device) => Err(uncheckable(file, &key("device"), device, RELATIVE_DEVICE)),
        }
    }

    /// `services.<name>` of `file`; returns what the service extends, if anything.
    fn check_service(
        &self,
        file: &Path,
        base: &Path,
        name: &str,
        service: &Value,
    ) -> Result<Option<Extends>, ComposeError> {
        let Value::Mapping(service) = untag(service) else {
            return Ok(None);
        };
        let key = |field: &str| format!("services.{name}.{field}");

        for field in ["env_file", "label_file"] {
            let key = key(field);
            for path in path_list(file, &key, service.get(field))? {
                self.check(file, &key, path, base)?;
            }
        }

        if let Some(volumes) = service.get("volumes").map(untag) {
            let key = key("volumes");
            let volumes: &[Value] = match volumes {
                Value::Null => &[],
                Value::Sequence(volumes) => volumes,
                other => return Err(misshapen(file, &key, "a list", other)),
            };
            for volume in volumes {
                match untag(volume) {
                    Value::String(spec) => match short_volume_source(spec) {
                        Some(source) if source.contains('$') || is_file_path(source) => {
                            self.check(file, &key, source, base)?;
                            self.read_only(file, &key, source, short_volume_read_only(spec))?;
                        }
                        // A named volume.
                        Some(_) => {}
                        // An anonymous volume, unless a variable makes it something else.
                        None if spec.contains('$') => {
                            self.check(file, &key, spec, base)?;
                        }
                        None => {}
                    },
                    Value::Mapping(long) => {
                        let kind = long.get("type").map(untag).and_then(Value::as_str);
                        let not_a_path = matches!(
                            kind,
                            Some("volume" | "tmpfs" | "npipe" | "image" | "cluster")
                        );
                        if let (false, Some(source)) = (not_a_path, long.get("source")) {
                            let source = string(file, &key, source)?;
                            self.check(file, &key, source, base)?;
                            let read_only = match long.get("read_only").map(untag) {
                                Some(Value::Bool(read_only)) => *read_only,
                                Some(Value::String(text)) => text == "true",
                                _ => false,
                            };
                            self.read_only(file, &key, source, read_only)?;
                        }
                    }
                    other => return Err(misshapen(file, &key, "a string or a mapping", other)),
                }
            }
        }

        if let Some(build) = service.get("build").map(untag) {
            self.check_build(file, base, name, build)?;
        }

        let extends = match service.get("extends").map(untag) {
            None | Some(Value::Null) => None,
            Some(Value::String(service)) => Some(Extends {
                file: None,
                service: service.clone(),
            }),
            Some(Value::Mapping(extends)) => {
                let service = extends
                    .get("service")
                    .map(untag)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let file = match extends.get("file") {
                    Some(written) => {
                        let key = key("extends.file");
                        Some(self.check(file, &key, string(file, &key, written)?, base)?)
                    }
                    None => None,
                };
                Some(Extends { file, service })
            }
            Some(other) => {
                return Err(misshapen(
                    file,
                    &key("extends"),
                    "a service name or a mapping",
                    other,
                ))
            }
        };
        Ok(extends)
    }

    /// `services.<name>.build`: a context, or a mapping with one and more.
    fn check_build(
        &self,
        file: &Path,
        base: &Path,
        name: &str,
        build: &Value,
    ) -> Result<(), ComposeError> {
        let key = |field: &str| format!("services.{name}.build.{field}");
        let build = match build {
            Value::Null => return Ok(()),
            Value::String(context) => {
                self.check_context(file, &key("context"), context, base, false)?;
                return Ok(());
            }
            Value::Mapping(build) => build,
            other => {
                return Err(misshapen(
                    file,
                    &format!("services.{name}.build"),
                    "a path or a mapping",
                    other,
                ))
            }
        };
        let context = match build.get("context") {
            Some(context) => string(file, &key("context"), context)?,
            None => ".",
        };
        let context = self.check_context(file, &key("context"), context, base, false)?;
        if let Some(dockerfile) = build.get("dockerfile") {
            let key = key("dockerfile");
            let dockerfile = string(file, &key, dockerfile)?;
            match &context {
                // Relative to the context, as the builder reads it.
                Some(context) => {
                    self.check(file, &key, dockerfile, context)?;
                }
                // With a remote context the builder reads an absolute dockerfile from the host;
                // one written with `./` or `../` is checked too, from the file.
                None if dockerfile.starts_with('/')
                    || dockerfile.starts_with("./")
                    || dockerfile.starts_with("../") =>
                {
                    self.check(file, &key, dockerfile, base)?;
                }
                None => {}
            }
        }
        let key = key("additional_contexts");
        match build.get("additional_contexts").map(untag) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(contexts)) => {
                for context in contexts.values() {
                    self.check_context(file, &key, string(file, &key, context)?, base, true)?;
                }
            }
            Some(Value::Sequence(contexts)) => {
                for entry in contexts {
                    let entry = string(file, &key, entry)?;
                    let context = entry.split_once('=').map_or(entry, |(_, context)| context);
                    self.check_context(file, &key, context, base, true)?;
                }
            }
            Some(other) => return Err(misshapen(file, &key, "a mapping or a list", other)),
        }
        Ok(())
    }

    /// A build context: only the remote forms a builder fetches ([`REMOTE_CONTEXTS`], and
    /// [`OTHER_IMAGES`] in `additional_contexts`) are not host paths; anything else is checked
    /// as one, `x://..` included. Returns the local one as Compose spells it.
    fn check_context(
        &self,
        file: &Path,
        key: &str,
        context: &str,
        base: &Path,
        additional: bool,
    ) -> Result<Option<PathBuf>, ComposeError> {
        let remote = REMOTE_CONTEXTS
            .iter()
            .chain(if additional { &OTHER_IMAGES[..] } else { &[] })
            .any(|prefix| context.starts_with(prefix));
        if remote {
            return Ok(None);
        }
        if let Some(layout) = context.strip_prefix("oci-layout://") {
            // A directory on the host, `<path>[:tag][@digest]`, which buildx opens from where
            // Compose runs: the project directory.
            let path = layout.split('@').next().unwrap_or(layout);
            let path = path.split(':').next().unwrap_or(path);
            self.check(file, key, path, &self.project_dir)?;
            return Ok(None);
        }
        self.check(file, key, context, base).map(Some)
    }

    /// The service `service` of the file another one extends (`file` as Compose spells its path,
    /// already checked), and on along the chain: its paths start from its own directory. The
    /// file is read through `documents`, so it is parsed once and counts toward their limits.
    fn check_extended(
        &self,
        documents: &Documents,
        written: &Path,
        service: &str,
        depth: usize,
    ) -> Result<(), ComposeError> {
        let file = canonicalize(written)?;
        let base = written.parent().unwrap_or(written);
        if !self
            .extended
            .borrow_mut()
            .insert((file.clone(), base.to_owned(), service.to_owned()))
        {
            return Ok(());
        }
        if depth > MAX_EXTENDS_DEPTH {
            return Err(ComposeError::Malformed {
                file,
                problem: format!("`extends` chains across more than {MAX_EXTENDS_DEPTH} files"),
            });
        }
        documents.use_file(&file, base)?;
        let document = documents.get(&file)?;
        let definition = document
            .get("services")
            .map(untag)
            .and_then(|services| services.get(service));
        let Some(definition) = definition else {
            return Err(ComposeError::Malformed {
                file,
                problem: format!(
                    "`extends` names service {service}, which this file does not define"
                ),
            });
        };
        match self.check_service(&file, base, service, definition)? {
            Some(Extends {
                file: Some(next),
                service,
            }) => self.check_extended(documents, &next, &service, depth + 1),
            Some(Extends {
                file: None,
                service,
            }) => self.check_extended(documents, written, &service, depth + 1),
            None => Ok(()),
        }
    }

    /// Resolves one path `written` at `key` of `file`, starting from `start` when relative, and
    /// checks it lies inside a root. Returns it as Compose spells it (absolute, cleaned).
    fn check(
        &self,
        file: &Path,
        key: &str,
        written: &str,
        start: &Path,
    ) -> Result<PathBuf, ComposeError> {
        let literal = self.literal(file, key, written)?;
        let spelled = if let Some(rest) = literal.strip_prefix('~') {
            let home = self
                .home
                .as_ref()
                .ok_or_else(|| uncheckable(file, key, written, NO_HOME))?;
            clean(&home.join(rest.trim_start_matches('/')))
        } else {
            clean(&start.join(&literal))
        };
        self.confine(file, key, written, &spelled)?;
        Ok(spelled)
    }

    /// `written` (at `key` of `file`) with Compose's `$$` escapes undone; refused when it uses a
    /// variable.
    pub(super) fn literal(
        &self,
        file: &Path,
        key: &str,
        written: &str,
    ) -> Result<String, ComposeError> {
        without_variables(written).ok_or_else(|| uncheckable(file, key, written, VARIABLE))
    }

    /// Checks that `spelled` (absolute: the path `written` at `key` of `file`) leads inside a
    /// root once every symlink along it is followed. The error names it as written.
    pub(super) fn confine(
        &self,
        file: &Path,
        key: &str,
        written: &str,
        spelled: &Path,
    ) -> Result<(), ComposeError> {
        self.checked.set(self.checked.get() + 1);
        if self.checked.get() > MAX_PATHS_CHECKED {
            return Err(ComposeError::TooManyPaths {
                file: file.to_owned(),
                limit: MAX_PATHS_CHECKED,
            });
        }
        let resolved = resolve(spelled).map_err(|source| ComposeError::Resolve {
            path: spelled.to_owned(),
            source,
        })?;
        if self.roots.allows(&resolved) {
            Ok(())
        } else {
            Err(ComposeError::PathOutsideAllowedRoots {
                file: file.to_owned(),
                key: key.to_owned(),
                written: written.to_owned(),
                roots: self.roots.given.to_vec(),
            })
        }
    }
}

fn uncheckable(file: &Path, key: &str, written: &str, reason: &'static str) -> ComposeError {
    ComposeError::UncheckablePath {
        file: file.to_owned(),
        key: key.to_owned(),
        written: written.to_owned(),
        reason,
    }
}

/// What a service extends: a service of the same file (`file: None`) or of another one, as
/// Compose spells its path.
struct Extends {
    file: Option<PathBuf>,
    service: String,
}

/// `path` (absolute) with `.` and `..` applied lexically, as Go's `filepath.Clean` does; `..`
/// at the root stays at the root.
pub(super) fn clean(path: &Path) -> PathBuf {
    let mut cleaned = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => cleaned.push(part),
            Component::ParentDir => {
                cleaned.pop();
            }
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
        }
    }
    cleaned
}

/// Where `path` (absolute) leads once every symlink along it is followed: also those on the way
/// to a part that does not exist yet, and one whose target is missing. What does not exist is
/// taken as written.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::from("/");
    // The parts still to walk, the next one last.
    let mut pending: Vec<OsString> = Vec::new();
    push_parts(&mut pending, path);
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == "." {
            continue;
        }
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                push_parts(&mut pending, &target);
            }
            Ok(_) => resolved = candidate,
            Err(error)
                if error.kind() == io::ErrorKind::NotFound
                    || error.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                resolved = candidate;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(resolved)
}

/// Puts the parts of `path` on `pending` so that its first part is popped next.
fn push_parts(pending: &mut Vec<OsString>, path: &Path) {
    for component in path.components().rev() {
        match component {
            Component::Normal(part) => pending.push(part.to_owned()),
            Component::ParentDir => pending.push("..".into()),
            Component::CurDir => pending.push(".".into()),
            Component::Prefix(_) | Component::RootDir => {}
        }
    }
}

/// `written` with Compose's `$$` escapes undone, or `None` when it uses a variable.
pub(super) fn without_variables(written: &str) -> Option<String> {
    let mut literal = String::with_capacity(written.len());
    let mut rest = written;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        rest = rest[at..].strip_prefix("$$")?;
        literal.push('$');
    }
    literal.push_str(rest);
    Some(literal)
}

/// The source of a short-syntax volume (`src:dst[:mode]`), split as Compose splits it (a
/// Windows drive letter's colon is part of the path); `None` for an anonymous volume (`/dst`).
fn short_volume_source(spec: &str) -> Option<&str> {
    let mut chars = spec.chars();
    let drive = match (chars.next(), chars.next()) {
        (Some(letter), Some(':')) if letter.is_alphabetic() => letter.len_utf8() + 1,
        _ => 0,
    };
    spec[drive..]
        .find(':')
        .map(|colon| &spec[..drive + colon])
        .filter(|_| spec.chars().count() > 2)
}

/// Whether a short-syntax volume (`src:dst:mode`) is read-only: `ro` among its mode's options.
fn short_volume_read_only(spec: &str) -> bool {
    let Some(source) = short_volume_source(spec) else {
        return false;
    };
    let rest = &spec[source.len()..];
    let mut parts = rest.trim_start_matches(':').splitn(2, ':');
    let _destination = parts.next();
    parts
        .next()
        .is_some_and(|mode| mode.split(',').any(|option| option == "ro"))
}

/// Whether Compose takes a volume source for a host path rather than a volume name.
fn is_file_path(source: &str) -> bool {
    let mut chars = source.chars();
    match (chars.next(), chars.next()) {
        (Some('.' | '/' | '~'), _) => true,
        (Some('\\'), Some('\\')) => true,
        (Some(letter), Some(':')) => letter.is_alphabetic(),
        _ => false,
    }
}

/// A value with its YAML tags (`!override`, `!reset`) taken off.
fn untag(mut value: &Value) -> &Value {
    while let Value::Tagged(tagged) = value {
        value = &tagged.value;
    }
    value
}

/// A mapping section, or `None` when it is absent or empty.
fn mapping<'v>(
    file: &Path,
    key: &str,
    value: Option<&'v Value>,
) -> Result<Option<&'v Mapping>, ComposeError> {
    match value.map(untag) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Mapping(mapping)) => Ok(Some(mapping)),
        Some(other) => Err(misshapen(file, key, "a mapping", other)),
    }
}

/// A path given as one string, a list of strings, or (for `env_file`) a list of mappings with a
/// `path`.
fn path_list<'v>(
    file: &Path,
    key: &str,
    value: Option<&'v Value>,
) -> Result<Vec<&'v str>, ComposeError> {
    let items = match value.map(untag) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(path)) => return Ok(vec![path.as_str()]),
        Some(Value::Sequence(items)) => items,
        Some(other) => return Err(misshapen(file, key, "a path or a list of paths", other)),
    };
    items
        .iter()
        .map(|item| match untag(item) {
            Value::Mapping(long) => match long.get("path") {
                Some(path) => string(file, key, path),
                None => Err(ComposeError::Malformed {
                    file: file.to_owned(),
                    problem: format!("an entry of `{key}` has no `path`"),
                }),
            },
            other => string(file, key, other),
        })
        .collect()
}

fn string<'v>(file: &Path, key: &str, value: &'v Value) -> Result<&'v str, ComposeError> {
    match untag(value) {
        Value::String(text) => Ok(text),
        other => Err(misshapen(file, key, "a path", other)),
    }
}

fn misshapen(file: &Path, key: &str, expected: &str, found: &Value) -> ComposeError {
    ComposeError::Malformed {
        file: file.to_owned(),
        problem: format!("`{key}` must be {expected}, not {}", kind(found)),
    }
}

/// A mapping key as text, for the name of a key in a message.
fn key_text(key: &Value) -> String {
    match untag(key) {
        Value::String(text) => text.clone(),
        other => serde_yaml::to_string(other)
            .map(|text| text.trim_end().to_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use crate::compose::{load, load_with, BindMounts, ComposeError, ComposeProject};
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};
    use tempfile::TempDir;

    /// `root/` is the one allowed root and holds the project `root/app/`; `outside/` is beside
    /// it, and `root/app/link` is a symlink to it.
    struct Host {
        _tmp: TempDir,
        root: PathBuf,
        app: PathBuf,
        outside: PathBuf,
    }

    const BASE_SERVICE: &str = "services:\n  base:\n    image: x\n";

    fn host() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let top = fs::canonicalize(tmp.path()).unwrap();
        let root = top.join("root");
        let app = root.join("app");
        let outside = top.join("outside");
        for dir in [&app, &outside] {
            fs::create_dir_all(dir).unwrap();
        }
        for dir in [&app, &outside] {
            fs::write(dir.join("inside.env"), "A=1\n").unwrap();
            fs::write(dir.join("secret.env"), "S=1\n").unwrap();
            fs::write(dir.join("inside.yml"), BASE_SERVICE).unwrap();
            fs::write(dir.join("base.yml"), BASE_SERVICE).unwrap();
        }
        fs::write(app.join("inc.yml"), "services:\n  inc:\n    image: x\n").unwrap();
        symlink(&outside, app.join("link")).unwrap();
        Host {
            _tmp: tmp,
            root,
            app,
            outside,
        }
    }

    impl Host {
        /// Writes `compose` as the project's `compose.yaml` and loads it confined to `root/`.
        fn load(&self, compose: &str) -> Result<ComposeProject, ComposeError> {
            fs::write(self.app.join("compose.yaml"), compose).unwrap();
            load(&self.app, None, std::slice::from_ref(&self.root))
        }
    }

    fn web(body: &str) -> String {
        format!("services:\n  web:\n    image: x\n{body}")
    }

    /// Every key that names a host path: (key as the error names it, compose file with `{path}`,
    /// a path inside the project, the file or directory in `outside/` to aim at).
    fn keys() -> Vec<(&'static str, String, &'static str, &'static str)> {
        vec![
            (
                "services.web.env_file",
                web("    env_file: {path}\n"),
                "inside.env",
                "secret.env",
            ),
            (
                "services.web.env_file",
                web("    env_file: [inside.env, {path}]\n"),
                "inside.env",
                "secret.env",
            ),
            (
                "services.web.env_file",
                web("    env_file:\n      - path: {path}\n        required: false\n"),
                "inside.env",
                "secret.env",
            ),
            (
                "services.web.label_file",
                web("    label_file: [{path}]\n"),
                "inside.env",
                "secret.env",
            ),
            (
                "services.web.extends.file",
                web("    extends:\n      file: {path}\n      service: base\n"),
                "inside.yml",
                "base.yml",
            ),
            (
                "include.env_file",
                format!("include:\n  - path: inc.yml\n    env_file: {{path}}\n{}", web("")),
                "inside.env",
                "secret.env",
            ),
            (
                "include.env_file",
                format!("include:\n  - path: inc.yml\n    env_file: [{{path}}]\n{}", web("")),
                "inside.env",
                "secret.env",
            ),
            (
                "secrets.token.file",
                format!("{}secrets:\n  token:\n    file: {{path}}\n", web("")),
                "inside.env",
                "secret.env",
            ),
            (
                "configs.settings.file",
                format!("{}configs:\n  settings:\n    file: {{path}}\n", web("")),
                "inside.env",
                "secret.env",
            ),
            (
                "services.web.volumes",
                web("    volumes: [\"cache:/cache\", \"{path}:/data:ro\"]\n"),
                "./data",
                "",
            ),
            (
                "services.web.volumes",
                web("    volumes:\n      - type: bind\n        source: {path}\n        target: /data\n"),
                "./data",
                "",
            ),
            (
                "services.web.build.context",
                web("    build: {path}\n"),
                "./ctx",
                "",
            ),
            (
                "services.web.build.context",
                web("    build:\n      context: {path}\n"),
                "./ctx",
                "",
            ),
            (
                "services.web.build.dockerfile",
                web("    build:\n      context: .\n      dockerfile: {path}\n"),
                "Dockerfile",
                "secret.env",
            ),
            (
                "services.web.build.additional_contexts",
                web("    build:\n      context: .\n      additional_contexts:\n        extra: {path}\n"),
                "./ctx",
                "",
            ),
            (
                "volumes.data.driver_opts.device",
                format!(
                    "{}volumes:\n  data:\n    driver: local\n    driver_opts:\n      type: none\n      o: bind\n      device: {{path}}\n",
                    web("")
                ),
                "./data",
                "",
            ),
        ]
    }

    #[test]
    fn every_host_path_key_is_confined_to_the_allowed_roots() {
        let host = host();
        for (key, template, inside, target) in keys() {
            let compose = |path: &str| template.replace("{path}", path);
            let found = host.load(&compose(inside));
            assert!(found.is_ok(), "{key} {inside}: {}", found.unwrap_err());

            let absolute = host.outside.join(target).display().to_string();
            let climbing = Path::new("../../outside")
                .join(target)
                .display()
                .to_string();
            let through_link = Path::new("./link").join(target).display().to_string();
            let not_yet_there = "./link/not-yet/there".to_string();
            for (case, path) in [
                ("outside", absolute),
                ("`..` escape", climbing),
                ("symlink escape", through_link),
                ("missing path under a symlink", not_yet_there),
            ] {
                let error = match host.load(&compose(&path)) {
                    Ok(_) => panic!("{key}, {case}: {path} was accepted"),
                    Err(error) => error,
                };
                assert!(
                    matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
                    "{key}, {case}: {error}"
                );
                let message = error.to_string();
                assert!(message.contains(key), "{case}: {message}");
                assert!(message.contains(&path), "{case}: {message}");
                assert!(
                    message.contains(&host.root.display().to_string()),
                    "{case}: {message}"
                );
            }
        }
    }

    #[test]
    fn without_allowed_roots_host_paths_are_not_checked() {
        let host = host();
        let outside = host.outside.display();
        let compose = web(&format!(
            "    env_file: {outside}/secret.env\n    volumes: [\"/:/host\", \"${{DATA}}:/data\"]\n"
        ));
        fs::write(host.app.join("compose.yaml"), compose).unwrap();
        assert!(load(&host.app, None, &[]).is_ok());
    }

    /// A Git checkout's project (read-only bind mounts): a bind mount of its files is refused
    /// unless read-only, in each way Compose writes one; volumes that are not host paths pass.
    #[test]
    fn a_checkout_may_only_be_bind_mounted_read_only() {
        let host = host();
        fs::create_dir_all(host.app.join("data")).unwrap();
        let load = |compose: &str| {
            fs::write(host.app.join("compose.yaml"), compose).unwrap();
            load_with(
                &host.app,
                None,
                std::slice::from_ref(&host.root),
                BindMounts::ReadOnly,
            )
        };
        let writable = [
            web("    volumes: [\"./data:/data\"]\n"),
            web("    volumes: [\"./data:/data:rw\"]\n"),
            web("    volumes: [\"./data:/data:z\"]\n"),
            web("    volumes: [\"./:/src\"]\n"),
            web("    volumes:\n      - type: bind\n        source: ./data\n        target: /d\n"),
            web("    volumes:\n      - type: bind\n        source: ./data\n        target: /d\n        read_only: false\n"),
            format!(
                "{}volumes:\n  data:\n    driver_opts:\n      type: none\n      o: bind\n      device: ./data\n",
                web("    volumes: [\"data:/data\"]\n")
            ),
        ];
        for compose in writable {
            let error = load(&compose).unwrap_err();
            assert!(
                matches!(error, ComposeError::WritableBind { .. }),
                "{compose}: {error}"
            );
            assert!(error.to_string().contains("read-only"), "{error}");
        }
        let read_only = [
            web("    volumes: [\"./data:/data:ro\"]\n"),
            web("    volumes: [\"./data:/data:ro,z\"]\n"),
            web("    volumes: [\"./data:/data:z,ro\"]\n"),
            web("    volumes:\n      - type: bind\n        source: ./data\n        target: /d\n        read_only: true\n"),
            format!(
                "{}volumes:\n  data:\n    driver_opts:\n      type: none\n      o: bind,ro\n      device: ./data\n",
                web("    volumes: [\"data:/data\"]\n")
            ),
            web("    volumes: [\"cache:/cache\", \"/anonymous\"]\nvolumes:\n  cache: {}\n"),
            web("    volumes:\n      - type: tmpfs\n        target: /tmp\n"),
        ];
        for compose in read_only {
            load(&compose).unwrap_or_else(|error| panic!("{compose}: {error}"));
        }
        // A directory project mounts as its file says.
        host.load(&web("    volumes: [\"./data:/data\"]\n"))
            .unwrap();
    }

    #[test]
    fn named_anonymous_and_tmpfs_volumes_are_not_paths() {
        let host = host();
        let compose = web(
            "    volumes:\n      - data:/data\n      - /cache\n      - logs:/logs:ro\n      - type: volume\n        source: data\n        target: /more\n      - type: tmpfs\n        target: /tmp\n  db:\n    image: x\n    volumes:\nvolumes:\n  data: {}\n  logs:\n    driver: local\n",
        );
        let found = host.load(&compose);
        assert!(found.is_ok(), "{}", found.unwrap_err());
    }

    #[test]
    fn a_path_written_with_variables_is_refused_when_confined() {
        let host = host();
        for (key, body) in [
            (
                "services.web.volumes",
                "    volumes: [\"${DATA}:/data\"]\n",
            ),
            ("services.web.volumes", "    volumes: [\"$DATA/x:/data\"]\n"),
            ("services.web.volumes", "    volumes: [\"${EVERYTHING}\"]\n"),
            ("services.web.env_file", "    env_file: ${ENV_FILE}\n"),
            (
                "services.web.volumes",
                "    volumes:\n      - type: bind\n        source: ${SRC:-./data}\n        target: /d\n",
            ),
        ] {
            let error = host.load(&web(body)).unwrap_err();
            assert!(
                matches!(error, ComposeError::UncheckablePath { .. }),
                "{body}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains(key), "{message}");
            assert!(message.contains("variable"), "{message}");
        }
        // `$$` is a literal dollar, not a variable.
        let found = host.load(&web("    volumes: [\"./price$$list:/data\"]\n"));
        assert!(found.is_ok(), "{}", found.unwrap_err());
    }

    #[test]
    fn a_bind_mount_tagged_override_is_still_checked() {
        let host = host();
        let error = host
            .load(&web("    volumes: !override [\"/:/host\"]\n"))
            .unwrap_err();
        assert!(
            matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_dotenv_file_linked_outside_is_refused() {
        let host = host();
        symlink(host.outside.join("secret.env"), host.app.join(".env")).unwrap();
        let error = host.load(&web("")).unwrap_err();
        assert!(
            matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
            "{error}"
        );
        assert!(error.to_string().contains(".env"), "{error}");
    }

    #[test]
    fn a_path_under_home_is_judged_where_the_tilde_points() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        let host = host();
        let home = fs::canonicalize(home).unwrap_or_default();
        let error = host.load(&web("    volumes: [\"~/.ssh:/keys\"]\n"));
        if home.starts_with(&host.root) {
            assert!(error.is_ok());
        } else {
            let error = error.unwrap_err();
            assert!(
                matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
                "{error}"
            );
            assert!(error.to_string().contains("~/.ssh"), "{error}");
        }
    }

    #[test]
    fn an_extended_service_from_another_file_brings_its_own_paths_under_the_same_rule() {
        let host = host();
        fs::create_dir(host.app.join("common")).unwrap();
        // Relative to the extended file's own directory: `../inside.env` is the project's.
        fs::write(
            host.app.join("common/base.yml"),
            "services:\n  base:\n    image: x\n    env_file: ../inside.env\n  other:\n    image: x\n    volumes: [\"/:/host\"]\n",
        )
        .unwrap();
        let extends = web("    extends:\n      file: common/base.yml\n      service: base\n");
        let found = host.load(&extends);
        assert!(found.is_ok(), "{}", found.unwrap_err());

        fs::write(
            host.app.join("common/base.yml"),
            "services:\n  base:\n    extends: middle\n  middle:\n    image: x\n    volumes: [\"/:/host\"]\n",
        )
        .unwrap();
        let error = host.load(&extends).unwrap_err();
        assert!(
            matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains("base.yml"), "{message}");
        assert!(message.contains("services.middle.volumes"), "{message}");
    }

    #[test]
    fn paths_in_an_included_file_start_from_its_own_directory_or_its_project_directory() {
        let host = host();
        fs::create_dir_all(host.app.join("sub")).unwrap();
        fs::create_dir_all(host.app.join("elsewhere/deeper")).unwrap();
        fs::write(
            host.app.join("sub/compose.yaml"),
            "services:\n  sub:\n    image: x\n    env_file: ../inside.env\n",
        )
        .unwrap();
        // From sub/, `../inside.env` is the project's own file.
        let confined = [host.app.clone()];
        fs::write(
            host.app.join("compose.yaml"),
            format!("include: [sub/compose.yaml]\n{}", web("")),
        )
        .unwrap();
        let found = load(&host.app, None, &confined);
        assert!(found.is_ok(), "{}", found.unwrap_err());

        // With a project directory two levels down, the same `..` stays inside too…
        fs::write(
            host.app.join("compose.yaml"),
            format!(
                "include:\n  - path: sub/compose.yaml\n    project_directory: elsewhere/deeper\n{}",
                web("")
            ),
        )
        .unwrap();
        assert!(load(&host.app, None, &confined).is_ok());
        // …and with one at the project itself, it climbs out.
        fs::write(
            host.app.join("compose.yaml"),
            format!(
                "include:\n  - path: sub/compose.yaml\n    project_directory: .\n{}",
                web("")
            ),
        )
        .unwrap();
        let error = load(&host.app, None, &confined).unwrap_err();
        assert!(
            matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_compose_file_in_a_subdirectory_resolves_from_the_project_directory_as_compose_does() {
        let host = host();
        fs::create_dir(host.app.join("deploy")).unwrap();
        fs::write(
            host.app.join("deploy/prod.yml"),
            format!(
                "include: [inc.yml]\n{}",
                web("    env_file: ../outside.env\n")
            ),
        )
        .unwrap();
        // `--project-directory` is the project: `inc.yml` is the project's, and
        // `../outside.env` is beside the project, outside a root that is the project itself.
        let error = load(
            &host.app,
            Some("deploy/prod.yml"),
            std::slice::from_ref(&host.app),
        )
        .unwrap_err();
        assert!(
            matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
            "{error}"
        );
        let found = load(&host.app, Some("deploy/prod.yml"), &[]).unwrap();
        let names: Vec<_> = found.services.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["inc", "web"]);
    }
    /// `include:` with one entry, then a `web` service.
    fn including(entry: &str) -> String {
        format!("include:\n  - {entry}\n{}", web(""))
    }

    #[test]
    fn an_includes_project_directory_and_the_dotenv_compose_reads_for_it_are_confined() {
        // For an entry without `env_file`, Compose interpolates the included file with the
        // `.env` of the entry's project directory, or else of the directory of its first file
        // (tests/engine/confinement.rs shows it with `docker compose config`).
        let host = host();
        fs::write(host.outside.join(".env"), "DB_PASSWORD=hers\n").unwrap();
        fs::create_dir(host.app.join("linked")).unwrap();
        symlink(host.outside.join(".env"), host.app.join("linked/.env")).unwrap();
        fs::write(
            host.app.join("linked/inc.yml"),
            "services:\n  linked:\n    image: x\n",
        )
        .unwrap();
        let outside = host.outside.display().to_string();

        let refused = [
            (
                format!("{{path: inc.yml, project_directory: {outside}}}"),
                "include.project_directory",
                outside.as_str(),
            ),
            (
                "{path: inc.yml, project_directory: ../../outside}".into(),
                "include.project_directory",
                "../../outside",
            ),
            (
                "{path: inc.yml, project_directory: ./link}".into(),
                "include.project_directory",
                "./link",
            ),
            (
                "{path: inc.yml, project_directory: linked}".into(),
                "default env file",
                "linked/.env",
            ),
            ("linked/inc.yml".into(), "default env file", "linked/.env"),
            (
                "{path: [linked/inc.yml, inc.yml]}".into(),
                "default env file",
                "linked/.env",
            ),
            (
                "{path: linked/inc.yml, env_file: []}".into(),
                "default env file",
                "linked/.env",
            ),
        ];
        for (entry, key, written) in refused {
            let error = match host.load(&including(&entry)) {
                Ok(_) => panic!("{entry} was accepted"),
                Err(error) => error,
            };
            assert!(
                matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
                "{entry}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains(key), "{entry}: {message}");
            assert!(message.contains(written), "{entry}: {message}");
        }

        for entry in [
            "{path: inc.yml, project_directory: .}",
            "{path: inc.yml, project_directory: ''}",
            // Only the first file's directory counts.
            "{path: [inc.yml, linked/inc.yml]}",
            // With an `env_file`, Compose does not read `.env`.
            "{path: linked/inc.yml, env_file: inside.env}",
        ] {
            let found = host.load(&including(entry));
            assert!(found.is_ok(), "{entry}: {}", found.unwrap_err());
        }
    }

    #[test]
    fn an_include_path_or_project_directory_written_with_variables_is_refused_when_confined() {
        let host = host();
        for (entry, key) in [
            ("\"${INC}.yml\"", "include.path"),
            ("{path: \"$INC\"}", "include.path"),
            ("{path: [inc.yml, \"${MORE:-inc.yml}\"]}", "include.path"),
            (
                "{path: inc.yml, project_directory: \"${DIR}\"}",
                "include.project_directory",
            ),
        ] {
            let error = match host.load(&including(entry)) {
                Ok(_) => panic!("{entry} was accepted"),
                Err(error) => error,
            };
            assert!(
                matches!(error, ComposeError::UncheckablePath { .. }),
                "{entry}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains(key), "{entry}: {message}");
            assert!(message.contains("variable"), "{entry}: {message}");
        }
        // `$$` is a literal dollar, as Compose reads it.
        fs::write(
            host.app.join("price$list.yml"),
            "services:\n  priced:\n    image: x\n",
        )
        .unwrap();
        let found = host.load(&including("\"price$$list.yml\"")).unwrap();
        assert!(found.services.iter().any(|name| name.as_str() == "priced"));
    }

    #[test]
    fn only_the_remote_build_contexts_builders_accept_go_unchecked() {
        let host = host();
        for body in [
            "    build: https://github.com/example/app.git#main\n",
            "    build: http://example.com/context.tar.gz\n",
            "    build: git://example.com/app.git\n",
            "    build: ssh://git@example.com/app.git\n",
            "    build: git@github.com:example/app.git\n",
            "    build: github.com/example/app\n",
            // A relative dockerfile of a remote context is read from that context.
            "    build:\n      context: https://github.com/example/app.git\n      dockerfile: docker/Dockerfile\n",
            "    build:\n      context: .\n      additional_contexts:\n        base: docker-image://alpine:3\n        svc: service:base\n        lib: https://github.com/example/lib.git\n",
            "    build:\n      context: .\n      additional_contexts: [\"base=docker-image://alpine:3\", \"svc=service:base\"]\n",
        ] {
            let found = host.load(&web(body));
            assert!(found.is_ok(), "{body}: {}", found.unwrap_err());
        }

        let outside = host.outside.display();
        for (key, body) in [
            (
                "services.web.build.context",
                "    build: ./x://../../../outside\n".to_owned(),
            ),
            (
                "services.web.build.context",
                "    build:\n      context: \"y://../../../outside\"\n".to_owned(),
            ),
            (
                "services.web.build.context",
                "    build: service:x/../../../outside\n".to_owned(),
            ),
            (
                "services.web.build.additional_contexts",
                "    build:\n      context: .\n      additional_contexts:\n        extra: ./x://../../../outside\n".to_owned(),
            ),
            (
                "services.web.build.additional_contexts",
                format!("    build:\n      context: .\n      additional_contexts: [\"layout=oci-layout://{outside}/layout:latest\"]\n"),
            ),
            (
                "services.web.build.dockerfile",
                format!("    build:\n      context: https://github.com/example/app.git\n      dockerfile: {outside}/secret.env\n"),
            ),
            (
                "services.web.build.dockerfile",
                "    build:\n      context: git@github.com:example/app.git\n      dockerfile: ../../outside/secret.env\n".to_owned(),
            ),
        ] {
            let error = match host.load(&web(&body)) {
                Ok(_) => panic!("{body} was accepted"),
                Err(error) => error,
            };
            assert!(
                matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
                "{body}: {error}"
            );
            assert!(error.to_string().contains(key), "{body}: {error}");
        }
    }

    #[test]
    fn a_local_volume_that_mounts_a_host_device_is_confined_whatever_its_type() {
        let host = host();
        let volume =
            |options: &str| format!("{}volumes:\n  data:\n    driver_opts:\n{options}", web(""));
        let outside = host.outside.display();
        for (options, expected) in [
            (
                "      type: ext4\n      device: /dev/sda1\n".to_owned(),
                "/dev/sda1",
            ),
            (
                format!("      type: xfs\n      device: {outside}/disk\n"),
                "disk",
            ),
            (
                "      type: btrfs\n      device: dev/sdb\n".to_owned(),
                "dev/sdb",
            ),
            (
                "      type: overlay\n      o: lowerdir=/srv/other,upperdir=./up,workdir=./work\n"
                    .to_owned(),
                "overlay",
            ),
            (
                "      type: ${FS}\n      device: ./disk\n".to_owned(),
                "${FS}",
            ),
        ] {
            let error = match host.load(&volume(&options)) {
                Ok(_) => panic!("{options} was accepted"),
                Err(error) => error,
            };
            assert!(
                matches!(
                    error,
                    ComposeError::PathOutsideAllowedRoots { .. }
                        | ComposeError::UncheckablePath { .. }
                ),
                "{options}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains("volumes.data.driver_opts"), "{message}");
            assert!(message.contains(expected), "{message}");
        }

        for options in [
            "      type: nfs\n      o: addr=10.0.0.1,rw\n      device: \":/export/data\"\n",
            "      type: nfs4\n      device: fileserver:/export/data\n",
            "      type: cifs\n      o: addr=10.0.0.2,username=app\n      device: //fileserver/share\n",
            "      type: tmpfs\n      o: size=100m\n      device: tmpfs\n",
            "      type: none\n      o: bind\n      device: ./data\n",
        ] {
            let found = host.load(&volume(options));
            assert!(found.is_ok(), "{options}: {}", found.unwrap_err());
        }
    }

    #[test]
    fn a_refused_path_is_named_as_written_never_where_its_symlinks_lead() {
        let host = host();
        let outside = host.outside.display().to_string();
        for compose in [
            web("    env_file: ./link/secret.env\n"),
            web("    volumes: [\"./link:/data\"]\n"),
            including("link/inside.yml"),
            including("{path: inc.yml, project_directory: link}"),
        ] {
            let error = match host.load(&compose) {
                Ok(_) => panic!("{compose} was accepted"),
                Err(error) => error,
            };
            let message = error.to_string();
            assert!(message.contains("link"), "{message}");
            assert!(!message.contains(&outside), "{message}");
        }

        // The project directory itself, reached through a symlink inside the root.
        symlink(&host.outside, host.root.join("escape")).unwrap();
        let error = load(
            &host.root.join("escape"),
            None,
            std::slice::from_ref(&host.root),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("escape"), "{message}");
        assert!(!message.contains(&outside), "{message}");
    }
    #[test]
    fn a_file_whose_paths_are_checked_under_many_directories_stops_after_a_bounded_number() {
        // 300 bind mounts, each resolved again under each of 100 project directories: 30,000
        // resolutions of up to 40 symlinks each, for one small file.
        let host = host();
        let mounts: String = (0..300)
            .map(|n| format!("      - ./data{n}:/data{n}\n"))
            .collect();
        fs::write(
            host.app.join("inc.yml"),
            format!("services:\n  inc:\n    image: x\n    volumes:\n{mounts}"),
        )
        .unwrap();
        let entries: String = (0..100)
            .map(|n| {
                format!("  - {{path: inc.yml, project_directory: p{n}, env_file: inside.env}}\n")
            })
            .collect();
        let error = match host.load(&format!("include:\n{entries}{}", web(""))) {
            Ok(_) => panic!("30,000 path checks were made"),
            Err(error) => error,
        };
        assert!(
            matches!(error, ComposeError::TooManyPaths { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("more than 20000 host paths"),
            "{error}"
        );

        // One project directory is 300 checks, well within the limit.
        let found = host.load(&format!("include: [inc.yml]\n{}", web("")));
        assert!(found.is_ok(), "{}", found.unwrap_err());
    }
}
