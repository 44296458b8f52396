//! Where the agent keeps its private state, and how it gets its token: the real binary, started
//! as root and as an unprivileged user (`setpriv`), against directories other users could reach.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

const AGENT: &str = env!("CARGO_BIN_EXE_stagely-agent");
/// `nobody` on Debian: a user the tests run as, or hand directories to.
const OTHER_UID: u32 = 65534;
/// Nothing listens there: an agent that gets past its start-up checks keeps retrying.
const NO_SERVER: &str = "http://127.0.0.1:1";

/// `stagely-agent <args>` with only `env` (and PATH) in its environment, as `uid` when given.
/// An agent still running after 20 s has started serving: it is killed and the test told so.
async fn agent(args: &[&str], env: &[(&str, &OsStr)], uid: Option<u32>) -> Output {
    let mut command = match uid {
        Some(uid) => {
            let mut command = tokio::process::Command::new("setpriv");
            let id = uid.to_string();
            command.args(["--reuid", &id, "--regid", &id, "--clear-groups", AGENT]);
            command
        }
        None => tokio::process::Command::new(AGENT),
    };
    let child = command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting stagely-agent");
    match tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await {
        Ok(output) => output.unwrap(),
        Err(_) => panic!("stagely-agent {args:?} started serving instead of refusing to start"),
    }
}

/// Serving with a token in the environment: only the state directory can stop it.
async fn serve_with_state(state: &Path, uid: Option<u32>) -> Output {
    let token_file = state.with_extension("token");
    std::fs::write(&token_file, "stg_not-a-real-token\n").unwrap();
    agent(
        &[
            "--server",
            NO_SERVER,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[("STAGELY_STATE_DIR", state.as_os_str())],
        uid,
    )
    .await
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A temporary directory other users may pass through (0711), for tests that run as them.
fn traversable_tempdir() -> tempfile::TempDir {
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o711);
    base
}

#[tokio::test]
async fn the_agent_refuses_a_state_directory_that_another_user_owns_and_names_it() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o700);
    chown(&state, OTHER_UID);

    let output = serve_with_state(&state, None).await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains(&state.display().to_string()), "{said}");
    assert!(said.contains(&format!("uid {OTHER_UID}")), "{said}");
    assert!(said.contains("chown"), "says how to fix it: {said}");
    assert!(
        !state.join("private").exists(),
        "nothing was created in a directory another user controls"
    );
}

#[tokio::test]
async fn the_agent_refuses_a_state_directory_that_others_can_write_to() {
    for mode in [0o777, 0o770, 0o1777, 0o722] {
        let base = tempfile::tempdir().unwrap();
        let state = base.path().join("state");
        std::fs::create_dir(&state).unwrap();
        chmod(&state, mode);

        let output = serve_with_state(&state, None).await;
        let said = stderr(&output);
        assert!(
            !output.status.success(),
            "mode {mode:o} was accepted: {said}"
        );
        assert!(said.contains(&state.display().to_string()), "{said}");
        assert!(said.contains("chmod 700"), "says how to fix it: {said}");
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o7777,
            mode,
            "the agent does not quietly take over a directory others could have filled"
        );
    }
}

#[tokio::test]
async fn the_agent_refuses_a_symlink_or_a_file_as_its_state_directory() {
    let base = tempfile::tempdir().unwrap();
    let target = base.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    chmod(&target, 0o700);
    let link = base.path().join("state");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let file = base.path().join("a-file");
    std::fs::write(&file, "").unwrap();

    for state in [&link, &file] {
        let output = serve_with_state(state, None).await;
        let said = stderr(&output);
        assert!(!output.status.success(), "{said}");
        assert!(said.contains(&state.display().to_string()), "{said}");
    }
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing was written through the symlink"
    );
}

#[tokio::test]
async fn the_private_directory_inside_the_state_directory_is_checked_too() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let private = state.join("private");
    std::fs::create_dir_all(&private).unwrap();
    chmod(&state, 0o700);
    chmod(&private, 0o700);
    chown(&private, OTHER_UID);

    let output = serve_with_state(&state, None).await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains(&private.display().to_string()), "{said}");
}

#[tokio::test]
async fn an_unprivileged_agent_refuses_a_state_directory_root_owns() {
    let base = traversable_tempdir();
    let state = base.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o755);

    let output = serve_with_state(&state, Some(OTHER_UID)).await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains(&state.display().to_string()), "{said}");
    assert!(said.contains("uid 0"), "{said}");
}

#[tokio::test]
async fn an_unprivileged_agent_keeps_its_state_in_its_home_not_in_a_shared_directory() {
    let base = traversable_tempdir();
    let home = base.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chmod(&home, 0o700);
    chown(&home, OTHER_UID);
    let runtime = base.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    chmod(&runtime, 0o777);

    // No token: the agent stops right after preparing its state directory.
    let output = agent(
        &["--server", NO_SERVER],
        &[
            ("HOME", home.as_os_str()),
            ("XDG_RUNTIME_DIR", runtime.as_os_str()),
        ],
        Some(OTHER_UID),
    )
    .await;
    let said = stderr(&output);
    assert!(said.contains("no agent token"), "{said}");

    let state = home.join(".local/state/stagely-agent");
    for dir in [&state, &state.join("private")] {
        let metadata = std::fs::metadata(dir)
            .unwrap_or_else(|error| panic!("{}: {error}; the agent said: {said}", dir.display()));
        assert_eq!(metadata.uid(), OTHER_UID, "{}", dir.display());
        assert_eq!(
            metadata.permissions().mode() & 0o777,
            0o700,
            "{}",
            dir.display()
        );
    }
    assert_eq!(
        std::fs::read_dir(&runtime).unwrap().count(),
        0,
        "XDG_RUNTIME_DIR is not used"
    );
}

#[tokio::test]
async fn the_token_flag_is_refused_with_the_alternatives_and_without_echoing_the_token() {
    let state = tempfile::tempdir().unwrap();
    for args in [
        &[
            "--server",
            NO_SERVER,
            "--token",
            "stg_kept-off-the-command-line",
        ][..],
        &[
            "--server",
            NO_SERVER,
            "--token=stg_kept-off-the-command-line",
        ],
        &[
            "run",
            "--server",
            NO_SERVER,
            "--token",
            "stg_kept-off-the-command-line",
        ],
    ] {
        let output = agent(
            args,
            &[("STAGELY_STATE_DIR", state.path().as_os_str())],
            None,
        )
        .await;
        let said = stderr(&output);
        assert!(!output.status.success(), "{args:?}: {said}");
        assert!(
            said.contains("STAGELY_AGENT_TOKEN") && said.contains("--token-file"),
            "{args:?}: {said}"
        );
        assert!(
            !said.contains("kept-off"),
            "{args:?} echoed the token: {said}"
        );
    }
}

#[tokio::test]
async fn the_join_token_is_taken_from_the_environment_only() {
    let state = tempfile::tempdir().unwrap();
    let token_file = state.path().join("agent.token");
    let output = agent(
        &[
            "join",
            "--server",
            NO_SERVER,
            "--token-file",
            token_file.to_str().unwrap(),
            "--join-token",
            "stj_kept-off-the-command-line",
        ],
        &[],
        None,
    )
    .await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("STAGELY_JOIN_TOKEN"), "{said}");
    assert!(!said.contains("kept-off"), "echoed the token: {said}");
    assert!(!token_file.exists());
}

#[tokio::test]
async fn joining_checks_where_the_token_will_go_before_spending_the_join_token() {
    let base = tempfile::tempdir().unwrap();
    let open = base.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let token_file = open.join("agent.token");
    let output = agent(
        &[
            "join",
            "--server",
            NO_SERVER,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[("STAGELY_JOIN_TOKEN", OsStr::new("stj_never-spent"))],
        None,
    )
    .await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("chmod 700"), "{said}");
    assert!(
        !said.contains("could not join"),
        "the server was asked first: {said}"
    );
    assert!(!token_file.exists());
}
