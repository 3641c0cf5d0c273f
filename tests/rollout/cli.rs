//! `ficus rollout check`: the repository's plan (the demo's, and the format's reference by
//! example) is valid and names routes of the repository's routes.toml that have a service; a
//! broken plan is refused with every problem at its dotted key.

use std::path::Path;
use std::process::Command;

const FICUS: &str = env!("CARGO_BIN_EXE_ficus");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn check(plan: &Path) -> (Option<i32>, String, String) {
    let output = Command::new(FICUS)
        .args(["rollout", "check", "--plan"])
        .arg(plan)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running ficus rollout check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_repositorys_plan_checks_and_names_served_routes_of_its_routes_file() {
    let plan = Path::new(ROOT).join("rollout.toml");
    let (code, stdout, stderr) = check(&plan);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok (2 routes)"), "{stdout}");
    let loaded = ficus_rollout::plan::Plan::load(&plan).expect("the plan loads");
    let routes = std::fs::read_to_string(&loaded.controller.routes_file).unwrap();
    let file = ficus_proxy::check(&routes, Path::new(ROOT))
        .expect("the routes file checks")
        .file;
    for planned in &loaded.routes {
        let route = file.routes.iter().find(|r| r.name == planned.name);
        assert!(
            route.is_some_and(|r| r.serve.is_some()),
            "the plan's route {} is not a served route of {}",
            planned.name,
            loaded.controller.routes_file.display()
        );
    }
}

#[test]
fn a_broken_plan_is_refused_with_every_problem_at_its_key() {
    let dir = std::env::temp_dir().join(format!(
        "ficus-rollout-check-{}",
        ficus_testkit::unique_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // A percent out of range in the first route, an unknown key in the second.
    let text = std::fs::read_to_string(Path::new(ROOT).join("rollout.toml"))
        .unwrap()
        .replace("percents = [10, 25, 50]", "percents = [10, 140, 50]")
        .replace("max_p95_ratio = 3, ", "max_p95_ratio = 3, hold_s = 1, ");
    let plan = dir.join("rollout.toml");
    std::fs::write(&plan, text).unwrap();
    let (code, stdout, stderr) = check(&plan);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("route[0].canary.percents[1]: "), "{stderr}");
    assert!(
        stderr.contains("route[1].gates.hold_s: unknown field"),
        "{stderr}"
    );
    assert!(
        stderr.contains("route[0].canary.percents[2]: must be above"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
