//! The systemd unit in `contrib/` (issue 17): it keeps what running execrelay as a service
//! needs (its own account and state directory, a restart on failure, and a stop that leaves
//! running jobs to their supervisors), none of the hardening that would break jobs, and
//! `systemd-analyze verify` finds nothing to say about it where systemd is installed.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

const UNIT: &str = include_str!("../../contrib/execrelay.service");

fn directives() -> Vec<(&'static str, &'static str)> {
    UNIT.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .collect()
}

#[test]
fn the_service_unit_keeps_jobs_running_across_restarts_and_verifies() {
    let set = directives();
    for wanted in [
        ("KillMode", "process"),
        ("Restart", "on-failure"),
        ("StateDirectory", "execrelay"),
        ("User", "execrelay"),
        ("UMask", "0077"),
    ] {
        assert!(set.contains(&wanted), "{wanted:?} missing from the unit");
    }
    // Jobs run people's commands (sudo, their own temp files, their home): these break them.
    for breaking in [
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectHome",
        "RestrictSUIDSGID",
    ] {
        assert!(
            set.iter().all(|(key, _)| *key != breaking),
            "{breaking} would break jobs"
        );
    }

    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|path| Path::new(path).exists())
    else {
        eprintln!("systemd-analyze is not installed: the unit's directives were checked only");
        return;
    };
    // Verified as installed, with the binary this build made where the unit expects one.
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("execrelay.service");
    let installed = UNIT.replace("/usr/local/bin/execrelay", &bin().to_string_lossy());
    std::fs::write(&unit, installed).expect("write the unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
