//! Runs what the server asks for: deploys, lifecycle jobs (start, stop, restart, down) and log
//! streams, and watches the containers they make.
//!
//! - A job (deploy or lifecycle) runs at most once per job id: a job re-sent after a reconnect
//!   is answered with `Received` again (and its result, images included, if it has one) but not
//!   run again. The ledger of job ids is kept in a file, so this holds across agent restarts
//!   too; a job that was running when the agent died is reported failed ("run it again")
//!   rather than run a second time.
//! - Jobs of one project run one after another; different projects run side by side.
//! - After a job, the project's live state is read again (`crate::states`); after every welcome,
//!   every project's.
//! - Every event goes into one bounded queue that the link drains into whichever connection is
//!   up, so a deploy that finishes while the server is unreachable still reports its result
//!   when the link returns. Output lines are dropped when that queue is full; steps and results
//!   wait for room.
//! - Log streams belong to the connection that asked for them and end with it.
//! - A compose project is read on a blocking thread, never on the link's task (a big project
//!   would stall every heartbeat), and for inspections and log streams at most
//!   [`MAX_READS_AT_ONCE`] at a time, since each read may hold the reader's memory budget.

use crate::compose::{self, ComposeError, ComposeProject};
use crate::deploy::{self, DeployOptions, DeployRequest};
use crate::git;
use crate::lifecycle::{self, LifecycleRequest};
use crate::logs::{self, LogRequest};
use crate::placement;
use crate::runner::Redactor;
use crate::states::{self, Refresh};
use crate::wire;
use shared::protocol::{
    budget, DeployStep, Inspect, Inspected, JobEvent, JobUpdate, LifecyclePayload, StartLogs,
};
use shared::runtime::ServiceImage;
use shared::source::{CheckoutReport, GitCheckout};
use shared::{AgentToServer, DeployPayload, JobId, ProjectId, ProjectName, ServerToAgent};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many finished job ids are remembered for duplicate detection.
const REMEMBERED_JOBS: usize = 1_000;
/// Events waiting for the link.
pub const EVENT_QUEUE: usize = 4_096;
/// Log streams running at once; the server asks for one per watched project.
pub const MAX_LOG_STREAMS: usize = 128;
/// Compose projects read at once for log streams; more wait their turn. A deploy reads its
/// project outside this limit (deploys of a project run one at a time), and inspections have a
/// permit of their own, so a person waiting for the services list never queues behind the log
/// streams a reconnect restarts.
pub const MAX_READS_AT_ONCE: usize = 2;
/// How long an inspection's answer may wait for room in the event queue before it is dropped
/// (the server has given up by then).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone, Debug)]
enum JobState {
    Running,
    Finished {
        success: bool,
        message: String,
        /// What a successful deploy ran, replayed with its result.
        images: Vec<ServiceImage>,
        /// The commit a deploy from Git checked out.
        checkout: Option<CheckoutReport>,
    },
}

#[derive(Default)]
struct Ledger {
    jobs: HashMap<JobId, JobState>,
    order: VecDeque<JobId>,
    /// Where the ledger is kept; `None` keeps it in memory only.
    path: Option<PathBuf>,
}

/// One line of the ledger file.
#[derive(serde::Serialize, serde::Deserialize)]
struct LedgerEntry {
    job_id: JobId,
    /// `None` while running.
    success: Option<bool>,
    #[serde(default)]
    message: String,
    /// Added after the first ledgers were written: missing in those.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    images: Vec<ServiceImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkout: Option<CheckoutReport>,
}

impl Ledger {
    /// Loads the ledger at `path` (a missing or unreadable file starts an empty one). Jobs that
    /// were running when the agent stopped are recorded as failed.
    fn load(path: PathBuf) -> Self {
        let entries: Vec<LedgerEntry> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "ignoring an unreadable job ledger");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let mut ledger = Ledger::default();
        for entry in entries {
            let state = match entry.success {
                Some(success) => JobState::Finished {
                    success,
                    message: entry.message,
                    images: entry.images,
                    checkout: entry.checkout,
                },
                None => JobState::Finished {
                    success: false,
                    message: "the agent restarted while this job was running; run it again".into(),
                    images: Vec::new(),
                    checkout: None,
                },
            };
            ledger.insert(entry.job_id, state);
        }
        ledger.path = Some(path);
        ledger
    }

    fn insert(&mut self, job_id: JobId, state: JobState) {
        if self.jobs.insert(job_id, state).is_none() {
            self.order.push_back(job_id);
        }
        while self.order.len() > REMEMBERED_JOBS {
            if let Some(oldest) = self.order.pop_front() {
                self.jobs.remove(&oldest);
            }
        }
    }

    fn remember(&mut self, job_id: JobId, state: JobState) {
        self.insert(job_id, state);
        if let Err(error) = self.save() {
            tracing::warn!(%error, "could not save the job ledger; a re-sent job could run twice after a restart");
        }
    }

    /// Writes the ledger atomically and privately (0600, nothing planted beside it followed).
    fn save(&self) -> Result<(), LedgerError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let entries: Vec<LedgerEntry> = self
            .order
            .iter()
            .filter_map(|job_id| {
                let (success, message, images, checkout) = match self.jobs.get(job_id)? {
                    JobState::Running => (None, String::new(), Vec::new(), None),
                    JobState::Finished {
                        success,
                        message,
                        images,
                        checkout,
                    } => (
                        Some(*success),
                        message.clone(),
                        images.clone(),
                        checkout.clone(),
                    ),
                };
                Some(LedgerEntry {
                    job_id: *job_id,
                    success,
                    message,
                    images,
                    checkout,
                })
            })
            .collect();
        let bytes = serde_json::to_vec(&entries).map_err(LedgerError::Encode)?;
        crate::private_fs::write_private_file(path, &bytes)?;
        Ok(())
    }
}

/// Why the ledger could not be saved.
#[derive(Debug, thiserror::Error)]
enum LedgerError {
    #[error("encoding the job ledger: {0}")]
    Encode(serde_json::Error),
    #[error(transparent)]
    Private(#[from] crate::private_fs::PrivateDirError),
}

/// Cheap to clone; clones share the ledger, the locks and the event queue.
/// What a project's jobs take turns by.
#[derive(Clone, PartialEq, Eq, Hash)]
enum ProjectKey {
    Id(ProjectId),
    Name(ProjectName),
}

#[derive(Clone)]
pub struct Executor {
    options: Arc<DeployOptions>,
    events: mpsc::Sender<AgentToServer>,
    ledger: Arc<Mutex<Ledger>>,
    project_locks: Arc<Mutex<HashMap<ProjectKey, Arc<tokio::sync::Mutex<()>>>>>,
    log_streams: Arc<Mutex<HashMap<JobId, JoinHandle<()>>>>,
    /// Permits to read a compose project for a log stream, [`MAX_READS_AT_ONCE`] of them.
    reads: Arc<tokio::sync::Semaphore>,
    /// The one permit to read a compose project for an inspection.
    inspections: Arc<tokio::sync::Semaphore>,
    /// Marks projects whose containers' states to send again.
    refresh: Refresh,
}

impl Executor {
    /// An executor and the receiving end of its event queue, for the link to drain. The job
    /// ledger is kept in `ledger_file` when given (the agent's state directory), in memory
    /// otherwise.
    pub fn new(
        options: DeployOptions,
        ledger_file: Option<PathBuf>,
    ) -> (Self, mpsc::Receiver<AgentToServer>) {
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let ledger = ledger_file.map(Ledger::load).unwrap_or_default();
        let executor = Self {
            options: Arc::new(options),
            events,
            ledger: Arc::new(Mutex::new(ledger)),
            project_locks: Arc::default(),
            log_streams: Arc::default(),
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_READS_AT_ONCE)),
            inspections: Arc::new(tokio::sync::Semaphore::new(1)),
            refresh: Refresh::default(),
        };
        (executor, receiver)
    }

    /// Watches the containers of deployed projects and queues their states with the other
    /// events, for as long as the returned future runs (the agent spawns it once).
    pub fn watch_states(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        states::run(self.refresh.clone(), self.events.clone())
    }

    /// The link is up again (a welcome arrived): every project's state is sent in full.
    pub fn connected(&self) {
        self.refresh.link(true);
    }

    /// The link is down: no state frames are queued until it is up again.
    pub fn disconnected(&self) {
        self.refresh.link(false);
    }

    /// The marks the state watcher takes: for tests, and for callers that run no watcher.
    pub fn refresh(&self) -> &Refresh {
        &self.refresh
    }

    /// Acts on a server message; never blocks the link.
    pub fn handle(&self, message: ServerToAgent) {
        match message {
            ServerToAgent::Deploy(job) => self.deploy(job),
            ServerToAgent::Lifecycle(job) => self.lifecycle(job),
            ServerToAgent::StartLogs(request) => self.start_logs(request),
            ServerToAgent::StopLogs(stop) => self.stop_logs(stop.stream_id),
            ServerToAgent::Inspect(request) => self.inspect(request),
            ServerToAgent::HeartbeatAck(_) => {}
            other => tracing::debug!(message = ?other, "unhandled server message"),
        }
    }

    fn deploy(&self, job: DeployPayload) {
        if self.accept(job.job_id, &job.project) {
            let executor = self.clone();
            tokio::spawn(async move { executor.run_deploy(job).await });
        }
    }

    fn lifecycle(&self, job: LifecyclePayload) {
        if self.accept(job.job_id, &job.project) {
            let executor = self.clone();
            tokio::spawn(async move { executor.run_lifecycle(job).await });
        }
    }

    /// Whether to run the job `job_id`: `true` the first time (it is recorded as running and
    /// `Received` is sent); for an id seen before, answers with `Received` and the result it
    /// had, if any, and returns `false`.
    fn accept(&self, job_id: JobId, project: &ProjectName) -> bool {
        let previous = lock(&self.ledger).jobs.get(&job_id).cloned();
        let Some(state) = previous else {
            tracing::info!(%job_id, %project, "Received Job {job_id}");
            lock(&self.ledger).remember(job_id, JobState::Running);
            self.emit(job_id, JobEvent::Received);
            return true;
        };
        tracing::info!(%job_id, "Received Job {job_id} again; it is not run twice");
        // The answer may be what the server lost with a dropped connection: it waits for room
        // in the queue rather than being dropped like an output line.
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events.send(update(job_id, JobEvent::Received)).await;
            if let JobState::Finished {
                success,
                message,
                images,
                checkout,
            } = state
            {
                // A ledger written by an older agent may hold a longer message.
                let message = wire::cut(&message, budget::MESSAGE);
                let finished = JobEvent::Finished {
                    success,
                    message,
                    images,
                    checkout,
                };
                let _ = events.send(update(job_id, finished)).await;
            }
        });
        false
    }

    /// The lock that runs one project's jobs one after another: by its id (its checkouts are
    /// kept by id, and a renamed project's jobs must still take turns with the ones before the
    /// rename), by its name for a server too old to send the id.
    fn project_lock(
        &self,
        project: &ProjectName,
        id: Option<ProjectId>,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let key = match id {
            Some(id) => ProjectKey::Id(id),
            None => ProjectKey::Name(project.clone()),
        };
        lock(&self.project_locks).entry(key).or_default().clone()
    }

    /// Records a job's result and sends it; results wait for room in the queue rather than
    /// being dropped.
    async fn finish(
        &self,
        job_id: JobId,
        success: bool,
        message: String,
        images: Vec<ServiceImage>,
        checkout: Option<CheckoutReport>,
    ) {
        lock(&self.ledger).remember(
            job_id,
            JobState::Finished {
                success,
                message: message.clone(),
                images: images.clone(),
                checkout: checkout.clone(),
            },
        );
        let finished = JobEvent::Finished {
            success,
            message,
            images,
            checkout,
        };
        let _ = self.events.send(update(job_id, finished)).await;
    }

    async fn run_lifecycle(&self, job: LifecyclePayload) {
        let job_id = job.job_id;
        let project_lock = self.project_lock(&job.project, Some(job.project_id));
        let _serialized = project_lock.lock().await;
        let directory = Path::new(&job.directory);
        let roots = placement::roots_for(
            directory,
            Some(job.project_id),
            &self.options.allowed_roots,
            &self.options.private_dir,
        );
        let result = match roots {
            Ok(roots) => {
                let options = DeployOptions {
                    allowed_roots: roots,
                    ..(*self.options).clone()
                };
                self.lifecycle_in(&job, directory, &options).await
            }
            Err(refused) => Err(refused.to_string()),
        };
        self.refresh.project(job.project_id);
        let action = job.action.as_str();
        let (success, message) = match result {
            Ok(done) => {
                tracing::info!(%job_id, project = %job.project, action, "{done}");
                (true, done)
            }
            Err(error) => {
                let message = wire::cut(&error, budget::MESSAGE);
                tracing::warn!(%job_id, project = %job.project, action, %message, "lifecycle job failed");
                (false, message)
            }
        };
        self.finish(job_id, success, message, Vec::new(), None)
            .await;
    }

    /// Runs a lifecycle job on the project at `directory`, confined by `options`.
    async fn lifecycle_in(
        &self,
        job: &LifecyclePayload,
        directory: &Path,
        options: &DeployOptions,
    ) -> Result<String, String> {
        let job_id = job.job_id;
        let request = LifecycleRequest {
            project: &job.project,
            project_id: job.project_id,
            directory,
            compose_file: job.compose_file.as_deref(),
            action: job.action,
            service: job.service.as_ref(),
            remove_volumes: job.remove_volumes,
            target: job.target,
        };
        lifecycle::run(&request, options, |event| self.emit(job_id, event))
            .await
            .map_err(|error| error.to_string())
    }

    async fn run_deploy(&self, job: DeployPayload) {
        let job_id = job.job_id;
        let project_lock = self.project_lock(&job.project, job.project_id);
        let _serialized = project_lock.lock().await;

        let (result, checkout) = match &job.source {
            None => match placement::directory_roots(
                Path::new(&job.directory),
                &self.options.allowed_roots,
                &self.options.private_dir,
            ) {
                Err(refused) => (Err(refused.to_string()), None),
                Ok(roots) => {
                    // A directory project reaches no Git project's checkout, even by a bind mount.
                    let options = DeployOptions {
                        allowed_roots: roots,
                        ..(*self.options).clone()
                    };
                    let request = DeployRequest {
                        project: &job.project,
                        directory: Path::new(&job.directory),
                        compose_file: job.compose_file.as_deref(),
                        secrets: &job.secrets,
                        project_id: job.project_id,
                        pinned_images: &job.pinned_images,
                        pull_policy: job.pull_policy,
                        registry_credentials: &job.registry_credentials,
                        target: job.target,
                        secrets_as: job.secrets_as,
                    };
                    let result =
                        deploy::deploy(&request, &options, |event| self.emit(job_id, event)).await;
                    // Masked once more as a whole: a message may quote what a command printed.
                    let masked = deploy::redactor_of(&request);
                    (
                        result.map_err(|error| masked.redact(&error.to_string())),
                        None,
                    )
                }
            },
            Some(source) => self.deploy_from_git(&job, source).await,
        };
        if let Some(project_id) = job.project_id {
            self.refresh.project(project_id);
        }
        let (success, message, images) = match result {
            Ok(deployed) => (
                true,
                format!("{} container(s) running", deployed.containers.len()),
                deployed.images,
            ),
            Err(error) => (false, wire::cut(&error, budget::MESSAGE), Vec::new()),
        };
        if success {
            tracing::info!(%job_id, project = %job.project, "deploy succeeded");
        } else {
            tracing::warn!(%job_id, project = %job.project, %message, "deploy failed");
        }
        let deployed_commit = checkout
            .as_ref()
            .filter(|_| success)
            .map(|checkout| checkout.commit.sha.clone());
        self.finish(job_id, success, message, images, checkout)
            .await;
        // After the result is sent, before the project's next job: the deploy stands whatever
        // this does, and a store left unpruned is pruned after the next one.
        if let (Some(sha), Some(project_id)) = (deployed_commit, job.project_id) {
            let layout = git::Layout::new(&self.options.private_dir, project_id);
            if let Err(error) = git::prune(&layout, &sha, &Redactor::default()).await {
                tracing::warn!(%job_id, %error, "pruning the project's git object store failed");
            }
        }
    }

    /// Checks the project's repository out into the commit's own tree, then deploys from it:
    /// the compose project may not reach outside that tree. Only a deploy that worked makes
    /// the tree the project's current one; the commit is reported either way.
    async fn deploy_from_git(
        &self,
        job: &DeployPayload,
        source: &GitCheckout,
    ) -> (Result<deploy::Deployed, String>, Option<CheckoutReport>) {
        let job_id = job.job_id;
        let Some(project_id) = job.project_id else {
            return (
                Err("a deploy from Git needs the project's id (the server is too old)".into()),
                None,
            );
        };
        let layout = git::Layout::new(&self.options.private_dir, project_id);
        let masked = job
            .secrets
            .iter()
            .map(|secret| secret.value.expose().to_string())
            .chain(git::secrets_of(source));
        let redactor = Redactor::new(masked);
        self.emit(
            job_id,
            JobEvent::Step {
                name: DeployStep::Checkout,
            },
        );
        let mut source = source.clone();
        source.max_bytes = match source.max_bytes {
            0 => self.options.git_max_bytes,
            asked => asked.min(self.options.git_max_bytes),
        };
        let source = &source;
        let checked = git::checkout(source, &layout, &redactor, |line| {
            let line = wire::cut(&line, budget::LINE);
            self.emit(job_id, JobEvent::Output { line });
        })
        .await;
        let checked = match checked {
            Ok(checked) => checked,
            Err(error) => return (Err(error.to_string()), None),
        };
        self.emit(
            job_id,
            JobEvent::Output {
                line: wire::cut(
                    &format!(
                        "checked out {} ({}) by {}",
                        checked.report.commit.sha,
                        checked.report.commit.subject,
                        checked.report.commit.author
                    ),
                    budget::LINE,
                ),
            },
        );
        let mut options = (*self.options).clone();
        options.allowed_roots = vec![checked.root.clone()];
        let request = DeployRequest {
            project: &job.project,
            directory: &checked.directory,
            compose_file: source.compose_file.as_ref().map(|file| file.as_str()),
            secrets: &job.secrets,
            project_id: job.project_id,
            pinned_images: &job.pinned_images,
            pull_policy: job.pull_policy,
            registry_credentials: &job.registry_credentials,
            target: job.target,
            secrets_as: job.secrets_as,
        };
        let result = deploy::deploy(&request, &options, |event| self.emit(job_id, event)).await;
        // Lifecycle jobs, log streams and inspections read `current`: the commit that runs.
        match &result {
            Ok(_) => {
                if let Err(error) = git::promote(&layout, &checked) {
                    tracing::warn!(%job_id, %error, "the deploy succeeded but its checkout could not be made the current one");
                    let line = format!(
                        "the deploy succeeded, but its checkout could not be made the current one \
                         (Stop, Start, Restart and logs still use the previous commit): {error}"
                    );
                    self.emit(
                        job_id,
                        JobEvent::Output {
                            line: wire::cut(&line, budget::LINE),
                        },
                    );
                }
            }
            Err(_) => git::keep_failed(&layout, &checked),
        }
        // Masked once more as a whole: a message may quote what a command printed.
        let masked = deploy::redactor_of(&request);
        (
            result.map_err(|error| redactor.redact(&masked.redact(&error.to_string()))),
            Some(checked.report),
        )
    }

    fn start_logs(&self, request: StartLogs) {
        let stream_id = request.stream_id;
        {
            let mut streams = lock(&self.log_streams);
            streams.retain(|_, task| !task.is_finished());
            if streams.len() >= MAX_LOG_STREAMS && !streams.contains_key(&stream_id) {
                tracing::warn!(%stream_id, "already {MAX_LOG_STREAMS} log streams; not starting another");
                return;
            }
        }
        let executor = self.clone();
        let task = tokio::spawn(async move {
            let read = async {
                // Never closed, so acquiring always succeeds; the permit is held until the
                // read ends (one of `MAX_READS_AT_ONCE`).
                let _permit = executor.reads.acquire().await;
                executor
                    .load_confined(
                        &request.directory,
                        request.compose_file.as_deref(),
                        request.project_id,
                    )
                    .await
            };
            let project = match read.await {
                Ok(project) => project,
                Err(error) => {
                    tracing::warn!(%error, %stream_id, "cannot stream logs");
                    return;
                }
            };
            let services = match request.service {
                Some(service) => vec![service],
                None => project.services.into_iter().collect(),
            };
            let log_request = LogRequest {
                stream_id,
                project: request.project,
                files: vec![project.file],
                project_dir: project.dir,
                services,
                tail: request.tail,
                target: request.target,
                project_id: request.project_id,
            };
            let redactor = Redactor::new(request.redact.iter().map(|value| value.expose()));
            logs::stream(
                log_request,
                executor.options.compose.clone(),
                redactor,
                executor.events.clone(),
            )
            .await;
        });
        if let Some(old) = lock(&self.log_streams).insert(stream_id, task) {
            old.abort();
        }
    }

    /// Reads the compose project and answers with its services, in a task of its own; runs
    /// nothing.
    fn inspect(&self, request: Inspect) {
        let executor = self.clone();
        tokio::spawn(async move {
            let result = {
                // Never closed, so acquiring always succeeds.
                let _permit = executor.inspections.acquire().await;
                executor
                    .load_confined(
                        &request.directory,
                        request.compose_file.as_deref(),
                        request.project_id,
                    )
                    .await
            }
            .map(|project| project.services.into_iter().collect());
            let answer = AgentToServer::Inspected(Inspected {
                request_id: request.request_id,
                result: wire::inspection(result),
            });
            // A person is waiting for it: it waits for room behind a burst of log lines rather
            // than being dropped like one.
            let sent = tokio::time::timeout(ANSWER_WAIT, executor.events.send(answer)).await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::warn!("the event queue stayed full; an inspect answer was dropped");
            }
        });
    }

    /// Reads the compose project at `directory` on a blocking thread, where [`placement`] lets
    /// a job about `project_id` read it: never another project's checkout nor anything else of
    /// the agent's own.
    async fn load_confined(
        &self,
        directory: &str,
        compose_file: Option<&str>,
        project_id: Option<ProjectId>,
    ) -> Result<ComposeProject, String> {
        let roots = placement::roots_for(
            Path::new(directory),
            project_id,
            &self.options.allowed_roots,
            &self.options.private_dir,
        )
        .map_err(|refused| refused.to_string())?;
        // Reading only: what a deploy mounts was checked when it ran.
        compose::load_in_background(
            PathBuf::from(directory),
            compose_file.map(str::to_owned),
            roots,
            compose::BindMounts::AsWritten,
        )
        .await
        .map_err(|error: ComposeError| error.to_string())
    }

    fn stop_logs(&self, stream_id: JobId) {
        if let Some(task) = lock(&self.log_streams).remove(&stream_id) {
            task.abort();
        }
    }

    /// How many log streams are kept (running, or not yet noticed to have ended).
    pub fn log_streams(&self) -> usize {
        lock(&self.log_streams).len()
    }

    /// Ends every log stream: called when the connection that asked for them is gone.
    pub fn stop_all_logs(&self) {
        for (_, task) in lock(&self.log_streams).drain() {
            task.abort();
        }
    }

    fn emit(&self, job_id: JobId, event: JobEvent) {
        if self.events.try_send(update(job_id, event)).is_err() {
            tracing::debug!(%job_id, "event queue full; dropping a progress line");
        }
    }
}

fn update(job_id: JobId, event: JobEvent) -> AgentToServer {
    AgentToServer::JobUpdate(JobUpdate { job_id, event })
}

/// Every critical section here is a single map operation, so a poisoned lock holds consistent
/// data and is safe to keep using.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod private_dir_tests {
    use super::*;
    use crate::system::Compose;
    use std::time::Duration;

    /// Another user points a directory project at a Git project's checkout, directly or by a
    /// symlink of their own: the deploy is refused and runs nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn a_directory_project_inside_a_checkout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        let checkout = private
            .join("checkouts")
            .join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(checkout.join("repo")).unwrap();
        std::fs::write(
            checkout.join("repo/compose.yaml"),
            "services:\n  web:\n    image: stagely-never-pulled\n",
        )
        .unwrap();
        let link = dir.path().join("mine");
        std::os::unix::fs::symlink(checkout.join("repo"), &link).unwrap();
        let options = DeployOptions {
            compose: Compose::V2,
            allowed_roots: Vec::new(),
            private_dir: private.clone(),
            up_timeout: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            settle: Duration::ZERO,
            git_max_bytes: crate::git::DEFAULT_MAX_BYTES,
        };
        for directory in [checkout.join("repo"), link] {
            assert!(placement::inside(&directory, &private), "{directory:?}");
        }
        assert!(!placement::inside(dir.path(), &private));
        let (executor, mut events) = Executor::new(options, None);
        let job_id = JobId(uuid::Uuid::new_v4());
        executor.handle(ServerToAgent::Deploy(shared::DeployPayload {
            job_id,
            project: shared::ProjectName::parse("stagely-private-probe").unwrap(),
            directory: checkout.join("repo").display().to_string(),
            compose_file: None,
            secrets: Vec::new(),
            project_id: None,
            pinned_images: Vec::new(),
            source: None,
            pull_policy: Default::default(),
            registry_credentials: Vec::new(),
            target: Default::default(),
            secrets_as: Default::default(),
        }));
        let message = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match events.recv().await {
                    Some(AgentToServer::JobUpdate(shared::protocol::JobUpdate {
                        event:
                            JobEvent::Finished {
                                success, message, ..
                            },
                        ..
                    })) => return (success, message),
                    Some(_) => {}
                    None => panic!("the executor ended"),
                }
            }
        })
        .await
        .expect("the job finishes");
        assert!(!message.0, "{message:?}");
        assert!(
            message.1.contains("inside the agent's private directory"),
            "{message:?}"
        );
    }
}

/// What a server (or a person who can point a directory project anywhere) would try: a
/// directory project aimed at another project's Git checkout, for every job kind that reads a
/// project. Each is refused before its compose file is read.
#[cfg(test)]
mod other_checkout_tests {
    use super::*;
    use crate::system::Compose;
    use shared::protocol::StartLogs;
    use shared::runtime::LifecycleAction;
    use std::time::Duration;

    struct Setup {
        _dir: tempfile::TempDir,
        checkout: PathBuf,
        executor: Executor,
        events: mpsc::Receiver<AgentToServer>,
    }

    /// An agent whose private directory holds the victim's checkout (a compose file that
    /// names a secret of theirs), with allowed roots set, as an operator would.
    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        let victim = ProjectId(uuid::Uuid::new_v4());
        let checkout = git::Layout::new(&private, victim).repo();
        std::fs::create_dir_all(&checkout).unwrap();
        std::fs::write(
            checkout.join("compose.yaml"),
            "services:\n  victims-internal-billing:\n    image: stagely-never-pulled\n",
        )
        .unwrap();
        let apps = dir.path().join("apps");
        std::fs::create_dir_all(&apps).unwrap();
        let options = DeployOptions {
            compose: Compose::V2,
            allowed_roots: vec![apps, private.join("checkouts")],
            private_dir: private,
            up_timeout: Duration::from_secs(30),
            health_timeout: Duration::from_secs(1),
            settle: Duration::ZERO,
            git_max_bytes: crate::git::DEFAULT_MAX_BYTES,
        };
        let (executor, events) = Executor::new(options, None);
        Setup {
            _dir: dir,
            checkout,
            executor,
            events,
        }
    }

    async fn next(events: &mut mpsc::Receiver<AgentToServer>) -> AgentToServer {
        tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("the agent answers")
            .expect("the executor ended")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_inspection_of_another_projects_checkout_is_refused() {
        let Setup {
            _dir,
            checkout,
            executor,
            mut events,
        } = setup();
        let request_id = JobId(uuid::Uuid::new_v4());
        executor.handle(ServerToAgent::Inspect(Inspect {
            request_id,
            directory: checkout.display().to_string(),
            compose_file: None,
            project_id: Some(ProjectId(uuid::Uuid::new_v4())),
        }));
        let AgentToServer::Inspected(answer) = next(&mut events).await else {
            panic!("not the inspection's answer");
        };
        let error = answer
            .result
            .expect_err("the victim's services were listed");
        assert!(
            error.contains("inside the agent's private directory"),
            "{error}"
        );
        assert!(!error.contains("billing"), "{error}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lifecycle_jobs_on_another_projects_checkout_are_refused() {
        let Setup {
            _dir,
            checkout,
            executor,
            mut events,
        } = setup();
        for action in [
            LifecycleAction::Start,
            LifecycleAction::Stop,
            LifecycleAction::Restart,
        ] {
            let job_id = JobId(uuid::Uuid::new_v4());
            executor.handle(ServerToAgent::Lifecycle(LifecyclePayload {
                job_id,
                project: ProjectName::parse(format!(
                    "stagely-probe-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ))
                .unwrap(),
                project_id: ProjectId(uuid::Uuid::new_v4()),
                directory: checkout.display().to_string(),
                compose_file: None,
                action,
                service: None,
                remove_volumes: false,
                target: Default::default(),
            }));
            let (success, message) = loop {
                if let AgentToServer::JobUpdate(JobUpdate {
                    event:
                        JobEvent::Finished {
                            success, message, ..
                        },
                    ..
                }) = next(&mut events).await
                {
                    break (success, message);
                }
            };
            assert!(!success, "{action:?}: {message}");
            assert!(
                message.contains("inside the agent's private directory"),
                "{action:?}: {message}"
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_log_stream_of_another_projects_checkout_reads_nothing_of_it() {
        let Setup {
            _dir,
            checkout,
            executor,
            ..
        } = setup();
        let error = executor
            .load_confined(
                &checkout.display().to_string(),
                None,
                Some(ProjectId(uuid::Uuid::new_v4())),
            )
            .await
            .expect_err("the victim's project was read");
        assert!(
            error.contains("inside the agent's private directory"),
            "{error}"
        );
        // The stream itself ends at once, having sent nothing.
        let stream_id = JobId(uuid::Uuid::new_v4());
        executor.handle(ServerToAgent::StartLogs(StartLogs {
            stream_id,
            project: ProjectName::parse("stagely-probe-logs").unwrap(),
            directory: checkout.display().to_string(),
            compose_file: None,
            service: None,
            tail: 10,
            redact: Vec::new(),
            project_id: None,
            target: Default::default(),
        }));
        let task = lock(&executor.log_streams).remove(&stream_id).unwrap();
        task.await.unwrap();
    }
}

#[cfg(test)]
mod inspect_tests {
    use super::*;
    use crate::system::Compose;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn an_inspect_is_answered_without_reading_the_project_on_the_links_task() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  web:\n    image: x\n",
        )
        .unwrap();
        let options = DeployOptions {
            compose: Compose::V2,
            allowed_roots: vec![dir.path().to_owned()],
            private_dir: dir.path().join("private"),
            up_timeout: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            settle: Duration::ZERO,
            git_max_bytes: crate::git::DEFAULT_MAX_BYTES,
        };
        let (executor, mut events) = Executor::new(options, None);
        let request_id = JobId(uuid::Uuid::new_v4());
        executor.handle(ServerToAgent::Inspect(Inspect {
            request_id,
            directory: dir.path().display().to_string(),
            compose_file: None,
            project_id: None,
        }));
        // `handle` returned without reading: the link's task goes straight back to its socket.
        assert!(
            events.try_recv().is_err(),
            "the project was read in `handle`"
        );

        match events.recv().await {
            Some(AgentToServer::Inspected(answer)) => {
                assert_eq!(answer.request_id, request_id);
                let services = answer.result.unwrap();
                let names: Vec<_> = services.iter().map(|name| name.as_str()).collect();
                assert_eq!(names, ["web"]);
            }
            other => panic!("expected the inspect answer, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_inspect_answer_waits_for_room_and_never_for_the_log_streams_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  web:\n    image: x\n",
        )
        .unwrap();
        let options = DeployOptions {
            compose: Compose::V2,
            allowed_roots: vec![dir.path().to_owned()],
            private_dir: dir.path().join("private"),
            up_timeout: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            settle: Duration::ZERO,
            git_max_bytes: crate::git::DEFAULT_MAX_BYTES,
        };
        let (executor, mut events) = Executor::new(options, None);
        // Log streams hold every read permit, and a burst of log lines fills the queue.
        let _held = executor.reads.acquire_many(MAX_READS_AT_ONCE as u32).await;
        let beat = AgentToServer::Heartbeat(shared::protocol::Heartbeat { seq: 0 });
        while executor.events.try_send(beat.clone()).is_ok() {}

        let request_id = JobId(uuid::Uuid::new_v4());
        executor.handle(ServerToAgent::Inspect(Inspect {
            request_id,
            directory: dir.path().display().to_string(),
            compose_file: None,
            project_id: None,
        }));
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(AgentToServer::Inspected(answer)) = events.recv().await {
                    return answer;
                }
            }
        })
        .await
        .expect("the answer was dropped or never read");
        assert_eq!(answer.request_id, request_id);
        assert!(answer.result.is_ok(), "{:?}", answer.result);
    }
}

#[cfg(test)]
mod ledger_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn a_job() -> JobId {
        JobId(uuid::Uuid::new_v4())
    }

    // The ledger's temporary (a random name, created O_EXCL|O_NOFOLLOW) is attacked at the very
    // name a write picks in `private_fs`'s own tests; here, its final name.
    #[test]
    fn a_symlink_planted_at_the_ledger_itself_is_replaced_not_written_through() {
        let state = tempfile::tempdir().unwrap();
        let victim = state.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let ledger_file = state.path().join("jobs.json");
        std::os::unix::fs::symlink(&victim, &ledger_file).unwrap();

        let mut ledger = Ledger::load(ledger_file.clone());
        ledger.remember(a_job(), JobState::Running);

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&ledger_file).unwrap().is_file());
    }

    #[test]
    fn a_finished_jobs_images_survive_a_restart_and_an_older_ledger_still_loads() {
        let state = tempfile::tempdir().unwrap();
        let ledger_file = state.path().join("jobs.json");
        let job = a_job();
        let images = vec![ServiceImage {
            service: shared::ServiceName::parse("web").unwrap(),
            image: "app:1.0".into(),
            image_id: format!("sha256:{}", "a".repeat(64)),
            repo_digest: Some("reg/app@sha256:bbbb".into()),
        }];
        Ledger::load(ledger_file.clone()).remember(
            job,
            JobState::Finished {
                success: true,
                message: "1 container(s) running".into(),
                images: images.clone(),
                checkout: None,
            },
        );
        match Ledger::load(ledger_file.clone()).jobs.get(&job) {
            Some(JobState::Finished { images: loaded, .. }) => assert_eq!(*loaded, images),
            other => panic!("{other:?}"),
        }

        // Written before images were kept: no `images` field at all.
        let old = a_job();
        let older = format!(
            r#"[{{"job_id":"{}","success":false,"message":"boom"}}]"#,
            old.0
        );
        std::fs::write(&ledger_file, older).unwrap();
        match Ledger::load(ledger_file).jobs.get(&old) {
            Some(JobState::Finished {
                success: false,
                message,
                images,
                ..
            }) => assert!(message == "boom" && images.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_ledger_is_readable_by_the_agent_only() {
        let state = tempfile::tempdir().unwrap();
        let ledger_file = state.path().join("jobs.json");
        let mut ledger = Ledger::load(ledger_file.clone());
        ledger.remember(a_job(), JobState::Running);
        let mode = std::fs::metadata(&ledger_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(state.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, ["jobs.json"], "no temporary file is left behind");
    }
}
