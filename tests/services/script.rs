//! `scripts/services`: a second start finds the services running, and stop stops them.
//!
//! The idempotence check runs against the services this test run uses; the stop check runs a
//! second, private pair of services in a temporary state directory, so that stopping them does
//! not disturb the other tests.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services")
}

fn run(state_dir: Option<&Path>, envs: &[(&str, String)], args: &[&str]) -> Output {
    let mut command = Command::new(script());
    command.args(args);
    if let Some(dir) = state_dir {
        command.env("FICUS_STATE_DIR", dir);
    }
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().expect("running scripts/services");
    eprintln!(
        "scripts/services {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn port_of(env_output: &str, var: &str) -> u16 {
    let line = env_output
        .lines()
        .find(|l| l.contains(var))
        .unwrap_or_else(|| panic!("{var} in {env_output}"));
    let value = line.rsplit(':').next().unwrap();
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("a port")
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_second_start_finds_the_services_running() {
    // The run's own services are up (scripts/test started them); starting again changes nothing.
    let output = run(None, &[], &["start"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("postgres already running"), "{stderr}");
    assert!(stderr.contains("tansu already running"), "{stderr}");
    let status = run(None, &[], &["status"]);
    assert!(status.status.success());
}

#[test]
fn start_is_idempotent_and_stop_stops() {
    let dir = tempdir();
    let envs = [
        ("FICUS_PG_PORT", free_port().to_string()),
        ("FICUS_KAFKA_PORT", free_port().to_string()),
    ];
    let first = run(Some(&dir), &envs, &["start"]);
    assert!(first.status.success(), "first start");
    let env_output = String::from_utf8(run(Some(&dir), &[], &["env"]).stdout).unwrap();
    let pg = port_of(&env_output, "FICUS_TEST_DATABASE_URL");
    let kafka = port_of(&env_output, "FICUS_TEST_KAFKA_BROKERS");
    assert!(listening(pg) && listening(kafka), "both listen after start");
    let pid = std::fs::read_to_string(dir.join("tansu/tansu.pid")).unwrap();

    let second = run(Some(&dir), &[], &["start"]);
    assert!(second.status.success(), "second start");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("postgres already running"), "{stderr}");
    assert!(stderr.contains("tansu already running"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("tansu/tansu.pid")).unwrap(),
        pid,
        "the broker was not restarted"
    );
    assert!(run(Some(&dir), &[], &["status"]).status.success());

    let stop = run(Some(&dir), &[], &["stop"]);
    assert!(stop.status.success(), "stop");
    assert!(!listening(pg), "postgres stopped listening");
    assert!(!listening(kafka), "tansu stopped listening");
    let pid: i32 = pid.trim().parse().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the broker process is gone"
    );
    let status = run(Some(&dir), &[], &["status"]);
    assert_eq!(status.status.code(), Some(3), "status says stopped");

    // A stop of stopped services is fine too.
    assert!(run(Some(&dir), &[], &["stop"]).status.success());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(pg_fallback_dir(&dir));
}

/// A fresh directory the postgres user can enter (the script runs PostgreSQL as that user).
fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ficus-services-test-{}",
        ficus_testkit::unique_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Where the script would put the cluster if the postgres user could not enter `dir`.
fn pg_fallback_dir(dir: &Path) -> PathBuf {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{}' | cksum | cut -d' ' -f1",
            dir.display()
        ))
        .output()
        .unwrap();
    PathBuf::from(format!(
        "/var/tmp/ficus-pg-{}",
        String::from_utf8_lossy(&output.stdout).trim()
    ))
}
