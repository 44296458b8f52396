//! Reading a user's Compose project: which file Compose would use, and which services it defines.
//!
//! The agent needs the service names to route scoped secrets, and nothing more, so this reads
//! just the `services` keys and the top-level `include` list. The directory comes from the server
//! and the files are written by the host's users, so nothing is trusted as it arrives:
//!
//! - every path is resolved (symlinks included) before it is used, and must stay inside the
//!   directories the agent may deploy from; the compose file must stay inside its project (a file
//!   it includes may sit elsewhere, `../common/compose.yaml` for one, as Compose allows);
//! - when the agent is confined to those directories, so is every other host path the files
//!   name (env files, bind mounts, secret files, …: see [`paths`]);
//! - relative paths start where Compose starts them: from the project directory in the project's
//!   own file (`--project-directory`, even for a file in a subdirectory), from an included file's
//!   directory (or its `project_directory`) in that file;
//! - a file is capped at 1 MiB before it is parsed, and what its YAML aliases expand to is
//!   measured before it is built, so an alias bomb ends in an error instead of eating the host's
//!   memory;
//! - the work is bounded per project, not per file: each file is parsed once however often it is
//!   included or extended, every file and directory it is read with counts toward one limit,
//!   every host path resolved toward another, and all the parsed files together share one memory
//!   budget;
//! - every error names the file it is about, so a person knows where to look, and names a path
//!   as the file writes it, never where its symlinks lead (that may be another user's directory).
//!
//! This module (with its child [`paths`]) is the only code of Stagely that parses YAML in
//! production: `serde_yaml` is unmaintained (RUSTSEC-2024-0320, see `deny.toml`), so it stays
//! behind this one door and can be swapped here alone. Tests elsewhere use it only to read
//! back what the code wrote.

use serde::de::{self, DeserializeSeed, Visitor};
use serde_yaml::Value;
use shared::{NameError, ServiceName};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

mod paths;

/// The files Compose looks for, in its order, when none is named.
const DEFAULT_FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// A compose file larger than this is refused unread.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// How deep `include` may nest below the project's compose file.
const MAX_INCLUDE_DEPTH: usize = 8;

/// How many files one project may read, each counted once for every directory its relative
/// paths start from: a file included under different project directories, or extended from
/// different places, has its paths checked once for each, so fan-out is bounded here rather than
/// by the depth.
const MAX_FILES_READ: usize = 256;

/// A budget for the parsed documents of one project, with every alias expanded: each node costs
/// the size of a [`Value`] plus its text, so this approximates the memory the parsed files hold.
/// A 1 MiB file without aliases stays well below it.
const MAX_EXPANDED_BYTES: usize = 64 << 20;

/// A Compose project as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComposeProject {
    /// The project directory, canonical.
    pub dir: PathBuf,
    /// The compose file inside `dir`, canonical.
    pub file: PathBuf,
    /// Every service the file and the files it includes define, profiles or not.
    pub services: BTreeSet<ServiceName>,
    /// The services whose own definition has a `build:` section (one that gets it only through
    /// `extends` is not seen here; Compose still builds its image when it is missing).
    pub built: BTreeSet<ServiceName>,
}

/// Why a project could not be read; every message names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot resolve {}: {source}", path.display())]
    Resolve { path: PathBuf, source: io::Error },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "{} is outside the directories this agent may deploy from ({})",
        path.display(),
        joined(roots, ", ")
    )]
    OutsideAllowedRoots {
        /// As given, not where its symlinks lead.
        path: PathBuf,
        roots: Vec<PathBuf>,
    },
    #[error(
        "compose file {name:?} must be a relative path inside the project directory, without '..'"
    )]
    UnsafeFileName { name: String },
    #[error(
        "{} leads outside the project directory {}",
        file.display(),
        dir.display()
    )]
    OutsideProject { file: PathBuf, dir: PathBuf },
    #[error("no compose file in {}: looked for {}", dir.display(), DEFAULT_FILE_NAMES.join(", "))]
    NoComposeFile { dir: PathBuf },
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{} is larger than {} MiB; compose files that big are refused",
        file.display(),
        limit >> 20
    )]
    TooLarge { file: PathBuf, limit: u64 },
    #[error("{} is not valid YAML: {source}", file.display())]
    Yaml {
        file: PathBuf,
        /// The 1-based line serde_yaml points at, when it knows one.
        line: Option<usize>,
        source: serde_yaml::Error,
    },
    #[error(
        "{} grows past {} MiB once its YAML aliases are expanded; refusing to parse it",
        file.display(),
        limit >> 20
    )]
    AliasExpansion { file: PathBuf, limit: usize },
    #[error(
        "{}: the project's compose files grow past {} MiB together once their YAML aliases are \
         expanded; refusing to read on",
        file.display(),
        limit >> 20
    )]
    TooMuchYaml { file: PathBuf, limit: usize },
    #[error("{}: {problem}", file.display())]
    Malformed { file: PathBuf, problem: String },
    #[error("{}: {source}", file.display())]
    BadServiceName { file: PathBuf, source: NameError },
    #[error(
        "compose files include each other in a cycle: {}",
        joined(files, " -> ")
    )]
    IncludeCycle { files: Vec<PathBuf> },
    #[error("{}: includes nest deeper than {limit} levels", file.display())]
    IncludeTooDeep { file: PathBuf, limit: usize },
    #[error("{} defines no services", file.display())]
    NoServices { file: PathBuf },
    #[error(
        "{}: the project's includes and extends read more than {limit} files; refusing to read \
         on",
        file.display()
    )]
    TooManyFiles { file: PathBuf, limit: usize },
    #[error(
        "{}: the project's files name more than {limit} host paths to check; refusing to read on",
        file.display()
    )]
    TooManyPaths { file: PathBuf, limit: usize },
    #[error(
        "{}: {key} {written} leads outside the directories this agent may deploy from ({})",
        file.display(),
        joined(roots, ", ")
    )]
    PathOutsideAllowedRoots {
        file: PathBuf,
        /// Where the path sits in the file, e.g. `services.web.volumes`.
        key: String,
        /// The path as the file writes it; where it leads is not kept, so no message shows it.
        written: String,
        roots: Vec<PathBuf>,
    },
    #[error(
        "{}: {key} {written} cannot be checked against the directories this agent may deploy \
         from: {reason}",
        file.display()
    )]
    UncheckablePath {
        file: PathBuf,
        key: String,
        written: String,
        reason: &'static str,
    },
    #[error(
        "{}: {key} {written} is mounted writable; a project deployed from Git may mount its \
         checkout only read-only (`:ro`, `read_only: true`, or `ro` in a volume's `o`): every \
         deploy cleans the checkout and every new commit replaces it, so nothing written there \
         is kept, and a container that could write it could change what the next deploy runs. \
         Keep data in a named volume",
        file.display()
    )]
    WritableBind {
        file: PathBuf,
        key: String,
        written: String,
    },
    #[error("reading the compose project stopped before it finished; try again")]
    Stopped,
}

/// Whether the project's bind mounts (of the host paths its allowed roots hold) may be writable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindMounts {
    /// As the file says (a directory project).
    #[default]
    AsWritten,
    /// Read-only only: a Git checkout, which the deploy cleans and the next commit replaces,
    /// and which the agent reads again on the next deploy.
    ReadOnly,
}

fn joined(paths: &[PathBuf], separator: &str) -> String {
    let shown: Vec<_> = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    shown.join(separator)
}

/// Finds the compose file of the project in `dir` and lists its services.
///
/// `file` names the compose file relative to `dir`; `None` picks the first of `compose.yaml`,
/// `compose.yml`, `docker-compose.yaml` and `docker-compose.yml`, as Compose does. Every path read
/// must resolve inside one of `allowed_roots`; an empty slice means no restriction.
pub fn load(
    dir: &Path,
    file: Option<&str>,
    allowed_roots: &[PathBuf],
) -> Result<ComposeProject, ComposeError> {
    load_with(dir, file, allowed_roots, BindMounts::AsWritten)
}

/// [`load`], with `bind_mounts` saying whether a bind mount may be writable (checked only when
/// `allowed_roots` confine the project).
pub fn load_with(
    dir: &Path,
    file: Option<&str>,
    allowed_roots: &[PathBuf],
    bind_mounts: BindMounts,
) -> Result<ComposeProject, ComposeError> {
    let roots = AllowedRoots::new(allowed_roots);
    let given = dir;
    let dir = canonicalize(dir)?;
    roots.check(&dir, given)?;
    if !dir.is_dir() {
        return Err(ComposeError::NotADirectory { path: dir });
    }
    let file = match file {
        Some(name) => {
            check_file_name(name)?;
            let named = dir.join(name);
            let resolved = canonicalize(&named)?;
            // Inside `dir`, which is inside an allowed root, so the file is too.
            if !resolved.starts_with(&dir) {
                return Err(ComposeError::OutsideProject { file: named, dir });
            }
            resolved
        }
        None => find_default_file(&dir)?,
    };

    let mut loader = Loader {
        // Compose gives `~` the home of the user it runs as: the agent's.
        confinement: roots.is_set().then(|| {
            paths::Confinement::new(
                roots,
                std::env::var_os("HOME").map(PathBuf::from).as_deref(),
                &dir,
                bind_mounts,
            )
        }),
        documents: Documents::default(),
        services: BTreeSet::new(),
        built: BTreeSet::new(),
        including: Vec::new(),
    };
    if let Some(confinement) = &loader.confinement {
        // The project's `.env`, which Compose reads for its variables.
        confinement.check_dotenv(&dir, ".env", &dir)?;
    }
    // Compose runs with `--project-directory <dir>`: the project's own file starts from there.
    loader.load_file(&file, &dir)?;
    if loader.services.is_empty() {
        return Err(ComposeError::NoServices { file });
    }
    Ok(ComposeProject {
        dir,
        file,
        services: loader.services,
        built: loader.built,
    })
}

/// [`load`] on a thread of its own, for async callers: reading a big project takes a while, and
/// the task that asked (the agent's link, a deploy) must not stall on it.
pub async fn load_in_background(
    dir: PathBuf,
    file: Option<String>,
    allowed_roots: Vec<PathBuf>,
    bind_mounts: BindMounts,
) -> Result<ComposeProject, ComposeError> {
    tokio::task::spawn_blocking(move || {
        load_with(&dir, file.as_deref(), &allowed_roots, bind_mounts)
    })
    .await
    .unwrap_or_else(|stopped| {
        // A panic is a bug in the reader; the caller still gets an answer to pass on.
        tracing::error!(error = %stopped, "reading a compose project stopped");
        Err(ComposeError::Stopped)
    })
}

/// The directories the agent may read from, resolved once per [`load`].
struct AllowedRoots<'a> {
    /// As configured, for error messages.
    given: &'a [PathBuf],
    /// `None` when no restriction was configured. A root that cannot be resolved holds nothing.
    canonical: Option<Vec<PathBuf>>,
}

impl<'a> AllowedRoots<'a> {
    fn new(given: &'a [PathBuf]) -> Self {
        let canonical = (!given.is_empty()).then(|| {
            given
                .iter()
                .filter_map(|root| fs::canonicalize(root).ok())
                .collect()
        });
        Self { given, canonical }
    }

    /// Whether a restriction was configured at all.
    fn is_set(&self) -> bool {
        self.canonical.is_some()
    }

    /// Whether `path` (canonical) lies inside a root, or no restriction was configured.
    fn allows(&self, path: &Path) -> bool {
        match &self.canonical {
            Some(roots) => roots.iter().any(|root| path.starts_with(root)),
            None => true,
        }
    }

    /// `path` must be canonical; an error names it as `given`.
    fn check(&self, path: &Path, given: &Path) -> Result<(), ComposeError> {
        if self.allows(path) {
            Ok(())
        } else {
            Err(ComposeError::OutsideAllowedRoots {
                path: given.to_owned(),
                roots: self.given.to_vec(),
            })
        }
    }
}

fn canonicalize(path: &Path) -> Result<PathBuf, ComposeError> {
    fs::canonicalize(path).map_err(|source| ComposeError::Resolve {
        path: path.to_owned(),
        source,
    })
}

/// A named compose file must be a plain relative path: no root, no `..`.
fn check_file_name(name: &str) -> Result<(), ComposeError> {
    let components = || Path::new(name).components();
    let plain = components().all(|part| matches!(part, Component::Normal(_) | Component::CurDir))
        && components().any(|part| matches!(part, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(ComposeError::UnsafeFileName {
            name: name.to_owned(),
        })
    }
}

/// `dir` must be canonical; the file found is checked to resolve inside it.
fn find_default_file(dir: &Path) -> Result<PathBuf, ComposeError> {
    for name in DEFAULT_FILE_NAMES {
        let candidate = dir.join(name);
        match fs::metadata(&candidate) {
            Ok(_) => {
                let resolved = canonicalize(&candidate)?;
                if !resolved.starts_with(dir) {
                    return Err(ComposeError::OutsideProject {
                        file: candidate,
                        dir: dir.to_owned(),
                    });
                }
                return Ok(resolved);
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ComposeError::Read {
                    path: candidate,
                    source,
                })
            }
        }
    }
    Err(ComposeError::NoComposeFile {
        dir: dir.to_owned(),
    })
}

/// The files one [`load`] reads, each parsed once, and what bounds the work.
struct Documents {
    /// Parsed documents by canonical path.
    parsed: RefCell<HashMap<PathBuf, Rc<Value>>>,
    /// Every file used so far, with the directory its relative paths start from.
    uses: RefCell<HashSet<(PathBuf, PathBuf)>>,
    /// What is left of [`MAX_EXPANDED_BYTES`] for the files not parsed yet.
    budget: Cell<usize>,
}

impl Default for Documents {
    fn default() -> Self {
        Self {
            parsed: RefCell::default(),
            uses: RefCell::default(),
            budget: Cell::new(MAX_EXPANDED_BYTES),
        }
    }
}

impl Documents {
    /// Records that `file` (canonical) is read with its relative paths starting from `base`;
    /// `false` when it already was. Every new pair counts toward [`MAX_FILES_READ`].
    fn use_file(&self, file: &Path, base: &Path) -> Result<bool, ComposeError> {
        let mut uses = self.uses.borrow_mut();
        if !uses.insert((file.to_owned(), base.to_owned())) {
            return Ok(false);
        }
        if uses.len() > MAX_FILES_READ {
            return Err(ComposeError::TooManyFiles {
                file: file.to_owned(),
                limit: MAX_FILES_READ,
            });
        }
        Ok(true)
    }

    /// The document of `file` (canonical), read and parsed the first time only.
    fn get(&self, file: &Path) -> Result<Rc<Value>, ComposeError> {
        if let Some(document) = self.parsed.borrow().get(file) {
            return Ok(Rc::clone(document));
        }
        let document = Rc::new(read_document(file, &self.budget)?);
        self.parsed
            .borrow_mut()
            .insert(file.to_owned(), Rc::clone(&document));
        Ok(document)
    }
}

/// Walks a compose file and the files it includes, collecting service names.
struct Loader<'a> {
    /// `None` when the agent may deploy from anywhere; else the roots and every path check.
    confinement: Option<paths::Confinement<'a>>,
    documents: Documents,
    services: BTreeSet<ServiceName>,
    built: BTreeSet<ServiceName>,
    /// The files whose includes are being followed, outermost first.
    including: Vec<PathBuf>,
}

impl Loader<'_> {
    /// `file` must be canonical and already checked against the allowed roots; `base` is the
    /// directory its relative paths start from (absolute, as Compose spells it).
    fn load_file(&mut self, file: &Path, base: &Path) -> Result<(), ComposeError> {
        if self.including.iter().any(|outer| outer == file) {
            let mut files = self.including.clone();
            files.push(file.to_owned());
            return Err(ComposeError::IncludeCycle { files });
        }
        // One included twice the same way (not in a cycle) is read once.
        if !self.documents.use_file(file, base)? {
            return Ok(());
        }
        if self.including.len() > MAX_INCLUDE_DEPTH {
            return Err(ComposeError::IncludeTooDeep {
                file: file.to_owned(),
                limit: MAX_INCLUDE_DEPTH,
            });
        }

        let document = self.documents.get(file)?;
        let malformed = |problem: String| ComposeError::Malformed {
            file: file.to_owned(),
            problem,
        };
        let top = match &*document {
            Value::Mapping(top) => top,
            Value::Null => return Ok(()),
            other => {
                return Err(malformed(format!(
                    "the top level must be a mapping, not {}",
                    kind(other)
                )))
            }
        };

        match top.get("services") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(services)) => {
                for (key, definition) in services {
                    let Value::String(name) = key else {
                        return Err(malformed(format!(
                            "a service name must be a string, not {}; quote it",
                            kind(key)
                        )));
                    };
                    let name = ServiceName::parse(name.as_str()).map_err(|source| {
                        ComposeError::BadServiceName {
                            file: file.to_owned(),
                            source,
                        }
                    })?;
                    if matches!(definition, Value::Mapping(fields) if fields.contains_key("build"))
                    {
                        self.built.insert(name.clone());
                    }
                    self.services.insert(name);
                }
            }
            Some(other) => {
                return Err(malformed(format!(
                    "`services` must be a mapping of service names, not {}",
                    kind(other)
                )))
            }
        }

        let includes = include_entries(top.get("include")).map_err(malformed)?;
        if let Some(confinement) = &self.confinement {
            confinement.check_file(&self.documents, file, base, top)?;
        }
        self.including.push(file.to_owned());
        for include in includes {
            let (files, included_base) = self.place(file, base, &include)?;
            for included in files {
                self.load_file(&included, &included_base)?;
            }
        }
        self.including.pop();
        Ok(())
    }

    /// The files of one `include` entry of `file` (whose relative paths start from `base`),
    /// canonical, and the directory their own relative paths start from; when confined, all
    /// checked, and the `.env` Compose reads for them too.
    fn place(
        &self,
        file: &Path,
        base: &Path,
        include: &Include,
    ) -> Result<(Vec<PathBuf>, PathBuf), ComposeError> {
        // Compose reads these as written once interpolated: `$$` is a dollar and `~` is not
        // expanded. Unconfined, a path with a variable is taken as written and fails to resolve.
        let spell = |key: &str, written: &str| -> Result<PathBuf, ComposeError> {
            let literal = match &self.confinement {
                Some(confinement) => confinement.literal(file, key, written)?,
                None => paths::without_variables(written).unwrap_or_else(|| written.to_owned()),
            };
            Ok(paths::clean(&base.join(literal)))
        };
        let spelled = include
            .paths
            .iter()
            .map(|path| spell("include.path", path))
            .collect::<Result<Vec<_>, _>>()?;
        // Compose's rule: an included file's paths, and its `.env`, start from the entry's
        // `project_directory`, or else from the directory of its first file, both as written.
        let (included_base, written_base) = match include.project_directory {
            Some(directory) => (
                spell("include.project_directory", directory)?,
                Path::new(directory),
            ),
            None => (
                spelled[0]
                    .parent()
                    .map_or_else(|| spelled[0].clone(), Path::to_path_buf),
                Path::new(include.paths[0])
                    .parent()
                    .unwrap_or(Path::new("")),
            ),
        };
        if let Some(confinement) = &self.confinement {
            for (written, spelled) in include.paths.iter().zip(&spelled) {
                confinement.confine(file, "include.path", written, spelled)?;
            }
            if let Some(directory) = include.project_directory {
                confinement.confine(
                    file,
                    "include.project_directory",
                    directory,
                    &included_base,
                )?;
            }
            if !include.env_file {
                let written = written_base.join(".env").display().to_string();
                confinement.check_dotenv(file, &written, &included_base)?;
            }
        }
        let files = spelled
            .iter()
            .map(|path| canonicalize(path))
            .collect::<Result<_, _>>()?;
        Ok((files, included_base))
    }
}

/// One entry of a top-level `include` list.
struct Include<'a> {
    /// The files, never empty: the first one, then the ones merged over it.
    paths: Vec<&'a str>,
    /// `None` when absent or empty, as Compose takes it.
    project_directory: Option<&'a str>,
    /// Whether the entry names env files; without, Compose reads the `.env` of the entry's
    /// project directory for its variables.
    env_file: bool,
}

/// The entries of a top-level `include` list: each entry is a path, or a mapping whose `path` is
/// a path or a list of paths.
fn include_entries(include: Option<&Value>) -> Result<Vec<Include<'_>>, String> {
    const ENTRY: &str = "each `include` entry must be a path or a mapping with `path`";
    let entries = match include {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(entries)) => entries,
        Some(other) => return Err(format!("`include` must be a list, not {}", kind(other))),
    };
    let mut includes = Vec::new();
    for entry in entries {
        let mut paths = Vec::new();
        let mut project_directory = None;
        let mut env_file = false;
        match entry {
            Value::String(path) => paths.push(path.as_str()),
            Value::Mapping(long) => {
                match long.get("path") {
                    Some(Value::String(path)) => paths.push(path.as_str()),
                    Some(Value::Sequence(list)) => {
                        for path in list {
                            let Value::String(path) = path else {
                                return Err(format!(
                                    "`include` `path` lists must hold paths, not {}",
                                    kind(path)
                                ));
                            };
                            paths.push(path.as_str());
                        }
                    }
                    Some(other) => return Err(format!("{ENTRY}; `path` is {}", kind(other))),
                    None => return Err(format!("{ENTRY}; this mapping has no `path`")),
                }
                match long.get("project_directory") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(directory)) if directory.is_empty() => {}
                    Some(Value::String(directory)) => project_directory = Some(directory.as_str()),
                    Some(other) => {
                        return Err(format!(
                            "`include` `project_directory` must be a path, not {}",
                            kind(other)
                        ))
                    }
                }
                // An empty list is no env file: Compose reads `.env` then. Anything else it
                // reads instead (checked as `include.env_file`) or refuses.
                env_file = match long.get("env_file") {
                    None | Some(Value::Null) => false,
                    Some(Value::Sequence(files)) => !files.is_empty(),
                    Some(Value::String(_)) => true,
                    Some(_) => false,
                };
            }
            other => return Err(format!("{ENTRY}, not {}", kind(other))),
        }
        if paths.is_empty() {
            return Err(format!("{ENTRY}; this `path` list is empty"));
        }
        includes.push(Include {
            paths,
            project_directory,
            env_file,
        });
    }
    Ok(includes)
}

/// What a YAML value is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Reads and parses one file (canonical path), with `<<` merge keys applied, spending what it
/// holds once its aliases are expanded from `budget` (the rest of [`MAX_EXPANDED_BYTES`]).
fn read_document(file: &Path, budget: &Cell<usize>) -> Result<Value, ComposeError> {
    let read_error = |source| ComposeError::Read {
        path: file.to_owned(),
        source,
    };
    // Checked before opening: opening a FIFO for reading would block.
    if !fs::metadata(file).map_err(read_error)?.is_file() {
        return Err(ComposeError::NotAFile {
            path: file.to_owned(),
        });
    }
    #[cfg(test)]
    tests::PARSES.with(|parses| parses.set(parses.get() + 1));
    let mut bytes = Vec::new();
    File::open(file)
        .and_then(|opened| opened.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ComposeError::TooLarge {
            file: file.to_owned(),
            limit: MAX_FILE_BYTES,
        });
    }

    let yaml_error = |source: serde_yaml::Error| {
        // serde_yaml's own guard against alias bombs only has this message to recognise it by.
        if source.to_string() == "repetition limit exceeded" {
            return ComposeError::AliasExpansion {
                file: file.to_owned(),
                limit: MAX_EXPANDED_BYTES,
            };
        }
        ComposeError::Yaml {
            file: file.to_owned(),
            line: source.location().map(|location| location.line()),
            source,
        }
    };
    let meter = Meter {
        left: Cell::new(budget.get()),
        exceeded: Cell::new(false),
    };
    if let Err(error) = Walk(&meter).deserialize(serde_yaml::Deserializer::from_slice(&bytes)) {
        let file = file.to_owned();
        let limit = MAX_EXPANDED_BYTES;
        return Err(match meter.exceeded.get() {
            // The first file read had the whole budget to itself.
            true if budget.get() == MAX_EXPANDED_BYTES => {
                ComposeError::AliasExpansion { file, limit }
            }
            true => ComposeError::TooMuchYaml { file, limit },
            false => yaml_error(error),
        });
    }
    budget.set(meter.left.get());
    let mut document: Value = serde_yaml::from_slice(&bytes).map_err(yaml_error)?;
    document.apply_merge().map_err(yaml_error)?;
    Ok(document)
}

/// What is left of [`MAX_EXPANDED_BYTES`] while a document is walked.
struct Meter {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

impl Meter {
    fn spend<E: de::Error>(&self, text_bytes: usize) -> Result<(), E> {
        let cost = std::mem::size_of::<Value>() + text_bytes;
        match self.left.get().checked_sub(cost) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom(
                    "the document is too large once aliases are expanded",
                ))
            }
        }
    }
}

/// Visits a document the way building a [`Value`] would (serde_yaml replays an alias's events
/// at every use), building nothing and charging every node to the [`Meter`].
///
/// serde_yaml's own repetition limit counts alias uses, not what they expand to: a list of a
/// few thousand items used a few thousand times passes it and builds millions of nodes.
#[derive(Clone, Copy)]
struct Walk<'a>(&'a Meter);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.spend(0)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.spend(0)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.spend(0)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.0.spend(0)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.0.spend(text.len())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.spend(0)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.spend(0)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        self.0.spend(0)?;
        while items.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        self.0.spend(0)?;
        while entries.next_key_seed(self)?.is_some() {
            entries.next_value_seed(self)?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, tagged: A) -> Result<(), A::Error> {
        self.0.spend(0)?;
        let ((), value) = tagged.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(value, self)
    }
}

/// The services of a compose file (its own text, not the files it includes) whose `deploy:`
/// section passes `test`: those that set `update_config` or `rollback_config` (what a Swarm
/// deploy leaves as the user wrote it), those that are jobs (`mode: replicated-job`). A file
/// that does not parse here has none, as far as this is concerned (reading it for its services
/// already succeeded or failed with a message).
pub fn services_whose_deploy(
    compose_yaml: &str,
    test: impl Fn(&serde_yaml::Value) -> bool,
) -> BTreeSet<ServiceName> {
    let Ok(document) = serde_yaml::from_str::<serde_yaml::Value>(compose_yaml) else {
        return BTreeSet::new();
    };
    let Some(services) = document
        .get("services")
        .and_then(|value| value.as_mapping())
    else {
        return BTreeSet::new();
    };
    services
        .iter()
        .filter(|(_, definition)| definition.get("deploy").is_some_and(&test))
        .filter_map(|(name, _)| ServiceName::parse(name.as_str()?).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    const WEB: &str = "services:\n  web:\n    image: nginx\n";

    fn project(files: &[(&str, &str)]) -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }
        dir
    }

    fn names(project: &ComposeProject) -> Vec<&str> {
        project.services.iter().map(ServiceName::as_str).collect()
    }

    thread_local! {
        /// How many files this thread has read and parsed: each test runs on a thread of its
        /// own, so a test sees its own reads.
        pub(super) static PARSES: Cell<usize> = const { Cell::new(0) };
    }

    fn parses() -> usize {
        PARSES.with(Cell::get)
    }

    #[test]
    fn services_with_a_build_section_are_told_apart_in_included_files_too() {
        let dir = project(&[
            (
                "compose.yaml",
                "include: [more.yaml]\nservices:\n  web:\n    build: .\n  db:\n    image: postgres\n",
            ),
            ("more.yaml", "services:\n  worker:\n    build:\n      context: ./worker\n"),
        ]);
        let found = load(dir.path(), None, &[]).unwrap();
        assert_eq!(names(&found), ["db", "web", "worker"]);
        let built: Vec<&str> = found.built.iter().map(ServiceName::as_str).collect();
        assert_eq!(built, ["web", "worker"]);
    }

    #[test]
    fn the_default_file_names_are_tried_in_compose_order() {
        let dir = project(&[
            ("docker-compose.yml", "services:\n  old: {}\n"),
            ("compose.yml", "services:\n  new: {}\n"),
        ]);
        let found = load(dir.path(), None, &[]).unwrap();
        assert_eq!(found.dir, fs::canonicalize(dir.path()).unwrap());
        assert_eq!(found.file, found.dir.join("compose.yml"));
        assert_eq!(names(&found), ["new"]);

        fs::write(dir.path().join("compose.yaml"), WEB).unwrap();
        let found = load(dir.path(), None, &[]).unwrap();
        assert_eq!(found.file, found.dir.join("compose.yaml"));
    }

    #[test]
    fn a_project_without_a_compose_file_lists_the_names_looked_for() {
        let dir = project(&[("compose.yaml.bak", WEB)]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ComposeError::NoComposeFile { .. }),
            "{error}"
        );
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml"),
            "{message}"
        );
    }

    #[test]
    fn a_named_file_in_a_subdirectory_is_used() {
        let dir = project(&[
            ("compose.yaml", "services:\n  other: {}\n"),
            ("deploy/prod.yml", WEB),
        ]);
        let found = load(dir.path(), Some("./deploy/prod.yml"), &[]).unwrap();
        assert_eq!(found.file, found.dir.join("deploy/prod.yml"));
        assert_eq!(names(&found), ["web"]);
    }

    #[test]
    fn file_names_that_climb_out_or_are_absolute_are_refused() {
        let dir = project(&[("compose.yaml", WEB)]);
        for name in [
            "../compose.yaml",
            "deploy/../../x.yml",
            "/etc/passwd",
            "",
            ".",
        ] {
            let error = load(dir.path(), Some(name), &[]).unwrap_err();
            assert!(
                matches!(&error, ComposeError::UnsafeFileName { name: refused } if refused == name),
                "{name:?}: {error}"
            );
        }
    }

    #[test]
    fn a_compose_file_symlinked_outside_the_project_is_refused() {
        let outside = project(&[("compose.yaml", WEB)]);
        let dir = project(&[]);
        symlink(
            outside.path().join("compose.yaml"),
            dir.path().join("compose.yaml"),
        )
        .unwrap();
        for file in [None, Some("compose.yaml")] {
            let error = load(dir.path(), file, &[]).unwrap_err();
            assert!(
                matches!(error, ComposeError::OutsideProject { .. }),
                "{error}"
            );
            assert!(
                error
                    .to_string()
                    .contains("compose.yaml leads outside the project directory"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_symlink_inside_the_project_is_followed() {
        let dir = project(&[("real.yml", WEB)]);
        symlink("real.yml", dir.path().join("compose.yaml")).unwrap();
        let found = load(dir.path(), None, &[]).unwrap();
        assert_eq!(found.file, found.dir.join("real.yml"));
    }

    #[test]
    fn projects_outside_the_allowed_roots_are_refused() {
        let root = project(&[("app/compose.yaml", WEB)]);
        let elsewhere = project(&[("compose.yaml", WEB)]);
        let roots = [root.path().to_owned()];

        assert!(load(&root.path().join("app"), None, &roots).is_ok());

        let error = load(elsewhere.path(), None, &roots).unwrap_err();
        assert!(
            matches!(error, ComposeError::OutsideAllowedRoots { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&root.path().display().to_string()),
            "{message}"
        );

        // A symlink inside the root is judged by where it points.
        symlink(elsewhere.path(), root.path().join("escape")).unwrap();
        let error = load(&root.path().join("escape"), None, &roots).unwrap_err();
        assert!(
            matches!(error, ComposeError::OutsideAllowedRoots { .. }),
            "{error}"
        );
    }

    #[test]
    fn empty_allowed_roots_mean_no_restriction() {
        let dir = project(&[("compose.yaml", WEB)]);
        assert!(load(dir.path(), None, &[]).is_ok());
    }

    #[test]
    fn allowed_roots_that_do_not_exist_allow_nothing() {
        let dir = project(&[("compose.yaml", WEB)]);
        let roots = [dir.path().join("missing")];
        let error = load(dir.path(), None, &roots).unwrap_err();
        assert!(
            matches!(error, ComposeError::OutsideAllowedRoots { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_missing_project_directory_is_named() {
        let dir = project(&[]);
        let missing = dir.path().join("nope");
        let error = load(&missing, None, &[]).unwrap_err();
        assert!(matches!(error, ComposeError::Resolve { .. }), "{error}");
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn a_file_over_one_mib_is_refused_unparsed() {
        let mut big = String::from(WEB);
        big.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
        let dir = project(&[("compose.yaml", &big)]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        assert!(matches!(error, ComposeError::TooLarge { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("compose.yaml is larger than 1 MiB"),
            "{message}"
        );
    }

    #[test]
    fn a_directory_named_as_the_compose_file_is_refused() {
        let dir = project(&[("compose.yaml/keep", "")]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        assert!(matches!(error, ComposeError::NotAFile { .. }), "{error}");
    }

    #[test]
    fn malformed_yaml_names_the_file_and_the_line() {
        let dir = project(&[("compose.yaml", "services:\n  web:\n    image: [nginx\n")]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        let message = error.to_string();
        let ComposeError::Yaml { file, line, .. } = &error else {
            panic!("{error}");
        };
        assert!(file.ends_with("compose.yaml"));
        assert_eq!(*line, Some(4));
        assert!(
            message.contains("compose.yaml is not valid YAML"),
            "{message}"
        );
        assert!(message.contains("line"), "{message}");
    }

    #[test]
    fn duplicate_service_names_are_invalid_yaml() {
        let dir = project(&[("compose.yaml", "services:\n  web: {}\n  web: {}\n")]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        assert!(matches!(error, ComposeError::Yaml { .. }), "{error}");
    }

    #[test]
    fn merge_keys_extension_fields_profiles_and_extends_are_understood() {
        let compose = r#"
x-common: &common
  restart: unless-stopped
  environment:
    TZ: UTC
x-more-services: &more
  cache:
    image: redis
services:
  <<: *more
  web:
    <<: *common
    image: nginx
  worker:
    extends:
      service: web
    profiles: [jobs]
  debug:
    extends:
      file: other.yml
      service: tools
    profiles: ["debug"]
"#;
        let dir = project(&[("compose.yaml", compose)]);
        let found = load(dir.path(), None, &[]).unwrap();
        assert_eq!(names(&found), ["cache", "debug", "web", "worker"]);
    }

    #[test]
    fn a_bad_service_name_names_the_file() {
        let dir = project(&[("compose.yaml", "services:\n  -web: {}\n")]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        assert!(
            matches!(error, ComposeError::BadServiceName { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("compose.yaml: service name \"-web\""),
            "{message}"
        );
    }

    #[test]
    fn misshapen_files_say_what_is_wrong() {
        let cases = [
            ("- web\n", "the top level must be a mapping, not a list"),
            (
                "services: [web]\n",
                "`services` must be a mapping of service names, not a list",
            ),
            (
                "services:\n  1: {}\n",
                "a service name must be a string, not a number; quote it",
            ),
            (
                "services: {web: {}}\ninclude: a.yml\n",
                "`include` must be a list, not a string",
            ),
            (
                "services: {web: {}}\ninclude: [{env_file: x}]\n",
                "this mapping has no `path`",
            ),
            (
                "services: {web: {}}\ninclude: [{path: 3}]\n",
                "`path` is a number",
            ),
            (
                "services: {web: {}}\ninclude: [{path: [a.yml, 3]}]\n",
                "lists must hold paths",
            ),
            (
                "services: {web: {}}\ninclude: [[a.yml]]\n",
                "with `path`, not a list",
            ),
        ];
        for (compose, expected) in cases {
            let dir = project(&[("compose.yaml", compose)]);
            let error = load(dir.path(), None, &[]).unwrap_err();
            assert!(
                matches!(error, ComposeError::Malformed { .. }),
                "{compose}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains("compose.yaml: "), "{message}");
            assert!(message.contains(expected), "{compose}: {message}");
        }
    }

    #[test]
    fn a_file_without_services_is_refused() {
        for compose in ["", "services:\n", "x-note: nothing here\n"] {
            let dir = project(&[("compose.yaml", compose)]);
            let error = load(dir.path(), None, &[]).unwrap_err();
            assert!(
                matches!(error, ComposeError::NoServices { .. }),
                "{compose:?}: {error}"
            );
            assert!(error
                .to_string()
                .contains("compose.yaml defines no services"));
        }
    }

    #[test]
    fn a_billion_laughs_file_ends_in_a_clear_error() {
        // Caught by serde_yaml's own repetition limit, which this pins to a clear message.
        let mut compose = String::from("x-0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
        for level in 1..=9 {
            let previous = format!("*a{}", level - 1);
            let uses = [previous.as_str(); 10].join(", ");
            compose.push_str(&format!("x-{level}: &a{level} [{uses}]\n"));
        }
        compose.push_str(WEB);
        let dir = project(&[("compose.yaml", &compose)]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        assert!(
            matches!(error, ComposeError::AliasExpansion { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains("compose.yaml grows past"), "{message}");
        assert!(message.contains("aliases are expanded"), "{message}");
    }

    #[test]
    fn quadratic_alias_expansion_is_stopped_before_it_is_built() {
        // 3000 items used 3000 times: 9 million nodes (over 600 MB as `Value`s), which
        // serde_yaml's own limit lets through; the walk stops it after 64 MiB.
        let items = vec!["x"; 3000].join(", ");
        let uses = vec!["*a"; 3000].join(", ");
        let compose = format!("x-items: &a [{items}]\nx-uses: [{uses}]\n{WEB}");
        let dir = project(&[("compose.yaml", &compose)]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        assert!(
            matches!(error, ComposeError::AliasExpansion { .. }),
            "{error}"
        );
    }

    #[test]
    fn modest_alias_use_is_fine() {
        let items = vec!["x"; 100].join(", ");
        let uses = vec!["*a"; 100].join(", ");
        let compose = format!("x-items: &a [{items}]\nx-uses: [{uses}]\n{WEB}");
        let dir = project(&[("compose.yaml", &compose)]);
        assert_eq!(names(&load(dir.path(), None, &[]).unwrap()), ["web"]);
    }

    #[test]
    fn included_files_add_their_services() {
        let dir = project(&[
            (
                "compose.yaml",
                "include:
  - db/compose.yaml
  - path: [cache.yml, cache.override.yml]
    project_directory: .
  - path: ./jobs.yml
services:
  web: {}
",
            ),
            (
                "db/compose.yaml",
                "include: [../shared.yml]\nservices:\n  db: {}\n",
            ),
            ("shared.yml", "services:\n  shared: {}\n"),
            ("cache.yml", "services:\n  cache: {}\n"),
            (
                "cache.override.yml",
                "services:\n  cache:\n    ports: ['6379']\n",
            ),
            (
                "jobs.yml",
                "x-a: &a {image: x}\nservices:\n  jobs:\n    <<: *a\n",
            ),
        ]);
        let found = load(dir.path(), None, &[dir.path().to_owned()]).unwrap();
        assert_eq!(names(&found), ["cache", "db", "jobs", "shared", "web"]);
        assert_eq!(found.file, found.dir.join("compose.yaml"));
    }

    #[test]
    fn a_file_included_from_two_places_is_not_a_cycle() {
        let dir = project(&[
            (
                "compose.yaml",
                "include: [a.yml, b.yml]\nservices:\n  web: {}\n",
            ),
            ("a.yml", "include: [common.yml]\n"),
            ("b.yml", "include: [common.yml]\n"),
            ("common.yml", "services:\n  common: {}\n"),
        ]);
        let found = load(dir.path(), None, &[]).unwrap();
        assert_eq!(names(&found), ["common", "web"]);
    }

    #[test]
    fn an_include_cycle_is_refused_with_the_chain() {
        let dir = project(&[
            ("compose.yaml", "include: [a.yml]\nservices:\n  web: {}\n"),
            ("a.yml", "include: [b.yml]\n"),
            ("b.yml", "include: [a.yml]\n"),
        ]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        let ComposeError::IncludeCycle { files } = &error else {
            panic!("{error}");
        };
        let tails: Vec<_> = files.iter().map(|file| file.file_name().unwrap()).collect();
        assert_eq!(tails, ["compose.yaml", "a.yml", "b.yml", "a.yml"]);
        assert!(error.to_string().contains("a.yml -> "), "{error}");
    }

    #[test]
    fn includes_nested_too_deep_are_refused() {
        // 0.yml includes 1.yml, which includes 2.yml, ... down to the last, which defines `web`.
        let last = MAX_INCLUDE_DEPTH + 1;
        let mut files: Vec<(String, String)> = (0..last)
            .map(|level| {
                (
                    format!("{level}.yml"),
                    format!("include: [{}.yml]\n", level + 1),
                )
            })
            .collect();
        files.push((format!("{last}.yml"), WEB.to_owned()));
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
            .collect();
        let dir = project(&files);

        let deepest_allowed = load(dir.path(), Some("1.yml"), &[]).unwrap();
        assert_eq!(names(&deepest_allowed), ["web"]);

        let error = load(dir.path(), Some("0.yml"), &[]).unwrap_err();
        assert!(
            matches!(error, ComposeError::IncludeTooDeep { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("deeper than 8 levels"),
            "{error}"
        );
    }

    #[test]
    fn includes_that_fan_out_are_stopped_after_a_bounded_number_of_reads() {
        // One file included under 300 project directories is 300 reads, each a parse of up to
        // 1 MiB; nested, it would multiply. The reader stops first.
        let entries: String = (0..300)
            .map(|n| format!("  - path: a.yml\n    project_directory: p{n}\n"))
            .collect();
        let dir = project(&[
            ("compose.yaml", &format!("include:\n{entries}{WEB}")),
            ("a.yml", "services:\n  a: {}\n"),
        ]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        assert!(
            matches!(error, ComposeError::TooManyFiles { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("more than 256 files"), "{error}");
    }

    #[test]
    fn an_include_outside_the_allowed_roots_is_refused() {
        let outside = project(&[("compose.yaml", "services:\n  evil: {}\n")]);
        let include = outside.path().join("compose.yaml");
        let root = project(&[(
            "compose.yaml",
            &format!("include: [{}]\n{WEB}", include.display()),
        )]);
        let roots = [root.path().to_owned()];
        let error = load(root.path(), None, &roots).unwrap_err();
        assert!(
            matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("include.path {}", include.display())),
            "{message}"
        );
    }

    #[test]
    fn a_missing_include_is_named() {
        let dir = project(&[("compose.yaml", &format!("include: [gone.yml]\n{WEB}"))]);
        let error = load(dir.path(), None, &[]).unwrap_err();
        assert!(matches!(error, ComposeError::Resolve { .. }), "{error}");
        assert!(error.to_string().contains("gone.yml"), "{error}");
    }

    #[test]
    fn thousands_of_services_extending_one_file_read_it_once() {
        // Each `extends` used to read and parse big.yml again: 2,000 parses of up to 1 MiB.
        let services: String = (0..2000)
            .map(|n| format!("  s{n}:\n    image: x\n"))
            .collect();
        let extending: String = (0..2000)
            .map(|n| format!("  e{n}:\n    extends: {{file: big.yml, service: s{n}}}\n"))
            .collect();
        let dir = project(&[
            ("big.yml", &format!("services:\n{services}")),
            ("compose.yaml", &format!("services:\n{extending}")),
        ]);
        let roots = [dir.path().to_owned()];
        let before = parses();
        let found = load(dir.path(), None, &roots).unwrap();
        assert_eq!(found.services.len(), 2000);
        assert_eq!(parses() - before, 2, "compose.yaml and big.yml, once each");
    }

    #[test]
    fn every_file_extends_reads_counts_toward_the_read_limit() {
        let mut files: Vec<(String, String)> = (0..300)
            .map(|n| {
                (
                    format!("base{n}.yml"),
                    "services:\n  base:\n    image: x\n".into(),
                )
            })
            .collect();
        let extending: String = (0..300)
            .map(|n| format!("  e{n}:\n    extends: {{file: base{n}.yml, service: base}}\n"))
            .collect();
        files.push(("compose.yaml".into(), format!("services:\n{extending}")));
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
            .collect();
        let dir = project(&files);
        let error = load(dir.path(), None, &[dir.path().to_owned()]).unwrap_err();
        assert!(
            matches!(error, ComposeError::TooManyFiles { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("more than 256 files"), "{error}");
    }

    #[test]
    fn files_that_only_together_grow_too_large_are_refused_before_all_are_parsed() {
        // Each file alone stays under the limit once its aliases are expanded; together they
        // would hold several times that in memory.
        let items = vec!["x"; 700].join(", ");
        let uses = vec!["*a"; 700].join(", ");
        let heavy = format!("x-items: &a [{items}]\nx-uses: [{uses}]\n");
        let alone = project(&[
            ("compose.yaml", &format!("include: [heavy.yml]\n{WEB}")),
            ("heavy.yml", &heavy),
        ]);
        assert!(load(alone.path(), None, &[]).is_ok());

        let dir = project(&[
            (
                "compose.yaml",
                &format!("include: [heavy0.yml, heavy1.yml, heavy2.yml]\n{WEB}"),
            ),
            ("heavy0.yml", &heavy),
            ("heavy1.yml", &heavy),
            ("heavy2.yml", &heavy),
        ]);
        let before = parses();
        let error = load(dir.path(), None, &[]).unwrap_err();
        assert!(matches!(error, ComposeError::TooMuchYaml { .. }), "{error}");
        assert_eq!(
            parses() - before,
            3,
            "compose.yaml, heavy0.yml and heavy1.yml"
        );
        let message = error.to_string();
        assert!(message.contains("heavy1.yml"), "{message}");
        assert!(message.contains("together"), "{message}");
    }
}
