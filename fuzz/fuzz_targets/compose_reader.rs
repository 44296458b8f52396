//! The compose reader (`agent::compose::load`) on compose files a host's users could write.
//!
//! The input is up to three files separated by NUL bytes (which YAML never contains):
//! `compose.yaml`, `other.yaml` and `sub/more.yaml`, written to a fresh directory that is also
//! the only allowed root, so an `include` can reach the others, itself, or a path that is refused.
//! Reading never panics and never blows up (libFuzzer's memory and time limits catch an alias
//! bomb that gets through); a project that reads lists only valid service names; and a lone file
//! without `include` lists exactly the services serde_yaml finds in it, merge keys applied.
#![no_main]

use agent::compose::load;
use libfuzzer_sys::fuzz_target;
use serde_yaml::Value;
use shared::ServiceName;
use std::collections::BTreeSet;
use std::fs;

const FILES: [&str; 3] = ["compose.yaml", "other.yaml", "sub/more.yaml"];

fuzz_target!(|data: &[u8]| {
    // In memory where there is a tmpfs: the files live for one run and the disk is slower.
    let dir = tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory");
    fs::create_dir(dir.path().join("sub")).expect("a subdirectory");
    let parts: Vec<&[u8]> = data.splitn(FILES.len(), |&byte| byte == 0).collect();
    for (name, contents) in FILES.iter().zip(&parts) {
        fs::write(dir.path().join(name), contents).expect("writing a compose file");
    }

    let roots = [dir.path().to_owned()];
    match load(dir.path(), None, &roots) {
        Ok(project) => {
            assert!(
                !project.services.is_empty(),
                "a project without services was accepted"
            );
            for service in &project.services {
                assert!(ServiceName::parse(service.as_str()).is_ok(), "{service:?}");
            }
            assert!(project.file.starts_with(&project.dir));
            if parts.len() == 1 {
                assert_eq!(project.services, services_seen_by_serde_yaml(parts[0]));
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});

/// The keys of `services` in a document that the reader accepted, read independently.
fn services_seen_by_serde_yaml(file: &[u8]) -> BTreeSet<ServiceName> {
    let mut document: Value = serde_yaml::from_slice(file).expect("the reader accepted it");
    document.apply_merge().expect("the reader merged it");
    let services = document["services"]
        .as_mapping()
        .expect("a services mapping");
    services
        .keys()
        .map(|key| ServiceName::parse(key.as_str().expect("a string key")).expect("a valid name"))
        .collect()
}
