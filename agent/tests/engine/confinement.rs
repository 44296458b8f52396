//! `STAGELY_ALLOWED_ROOTS` against what real Compose reads: the reader must check the files
//! Compose would open on the agent's behalf, so these tests first show Compose opening them.

use crate::helpers::run_ok;
use agent::compose::{load, ComposeError};
use agent::runner::CommandSpec;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

/// The services of the project in `dir` as `docker compose config` renders them.
async fn compose_config(dir: &Path) -> String {
    let dir = dir.to_str().unwrap();
    let config = CommandSpec::new("docker", ["compose", "--project-directory", dir, "config"])
        .current_dir(dir);
    run_ok(config).await.unwrap()
}

#[tokio::test]
async fn compose_reads_the_dotenv_of_an_includes_project_directory_which_the_agent_confines() {
    let top = tempfile::tempdir().unwrap();
    let top = fs::canonicalize(top.path()).unwrap();
    // Two users of one host: the agent may deploy from `root/`, which holds Bob's project;
    // Alice keeps hers elsewhere, with a secret in its `.env`.
    let (root, alice) = (top.join("root"), top.join("alice"));
    let bob = root.join("bob");
    fs::create_dir_all(bob.join("sub")).unwrap();
    fs::create_dir_all(&alice).unwrap();
    fs::write(alice.join(".env"), "DB_PASSWORD=alices-secret\n").unwrap();
    let stealing = "services:\n  stolen:\n    image: busybox\n    environment:\n      STOLEN: ${DB_PASSWORD:-unset}\n";
    fs::write(bob.join("inc.yml"), stealing).unwrap();
    fs::write(bob.join("sub/inc.yml"), stealing).unwrap();
    symlink(alice.join(".env"), bob.join("sub/.env")).unwrap();
    let web = "services:\n  web:\n    image: busybox\n";
    let roots = [root.clone()];

    for (include, key) in [
        // The entry's project directory is Alice's.
        (
            format!(
                "include:\n  - path: inc.yml\n    project_directory: {}\n",
                alice.display()
            ),
            "include.project_directory",
        ),
        // No project directory: the first file's own, whose `.env` leads to Alice's.
        (
            "include:\n  - sub/inc.yml\n".to_owned(),
            "default env file sub/.env",
        ),
    ] {
        fs::write(bob.join("compose.yaml"), format!("{include}{web}")).unwrap();
        let config = compose_config(&bob).await;
        assert!(
            config.contains("STOLEN: alices-secret"),
            "Compose no longer reads that .env; the reader's rule needs a look:\n{config}"
        );

        let error = load(&bob, None, &roots).unwrap_err();
        assert!(
            matches!(error, ComposeError::PathOutsideAllowedRoots { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains(key), "{message}");
        assert!(!message.contains("alices-secret"), "{message}");
    }
}
