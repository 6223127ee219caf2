//! The corpus of malformed policies and scenarios (tests/malformed/): every file has one
//! defect and says, on its first line, where it must be reported (`# expect: LINE FIELD`).
//! Each must be refused with exit 2 and a `file:LINE:col: FIELD: …; allowed: …` line, within bounded
//! memory, and no message line may run past a screenful (a huge value is never repeated
//! whole).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Virtual memory a check may use (ulimit -v, KiB): far more than a policy needs, far
/// less than the gigabytes the unbounded position index once took.
const MEMORY_KIB: u32 = 1_000_000;

fn files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

fn expectation(path: &Path) -> (usize, String) {
    let bytes = std::fs::read(path).unwrap();
    let first = String::from_utf8_lossy(bytes.split(|b| *b == b'\n').next().unwrap()).to_string();
    let rest = first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()));
    let (line, field) = rest.trim().split_once(' ').unwrap();
    (line.parse().unwrap(), field.to_string())
}

/// Runs `andon ARGS` under a memory limit and a time bound (a hang guard, not a timing
/// assertion): exit code and stderr.
fn andon(args: &[&str]) -> (i32, String) {
    let cmd = format!("ulimit -v {MEMORY_KIB}; exec timeout 20 \"$0\" \"$@\"",);
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .arg(env!("CARGO_BIN_EXE_andon"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_corpus(dir: &str, args: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let mut failures = Vec::new();
    let all = files(dir);
    assert!(!all.is_empty(), "{dir} is empty");
    for f in &all {
        let name = f.display().to_string();
        let (line, field) = expectation(f);
        let a = args(&name);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, err) = andon(&a);
        let at = format!("{name}:{line}:");
        let hit = err.lines().find(|l| {
            l.starts_with(&at)
                && (field == "-"
                    || [":", ".", "["]
                        .iter()
                        .any(|end| l.contains(&format!(" {field}{end}"))))
        });
        if code != 2 || hit.is_none() {
            failures.push(format!(
                "{name}: want exit 2 and `{at}…{field}`, got exit {code}:\n{}",
                err.chars().take(600).collect::<String>()
            ));
        }
        // Every refusal says what would be accepted (the README's promise), not only
        // what is wrong: serde's "expected one of", "write e.g." and others did not.
        if let Some(l) = hit.filter(|l| !l.contains("; allowed: ")) {
            failures.push(format!("{name}: no `; allowed: ` in `{l}`"));
        }
        if let Some(long) = err.lines().find(|l| l.len() > 1000) {
            failures.push(format!("{name}: a {}-byte message line", long.len()));
        }
    }
    failures
}

#[test]
fn every_malformed_policy_is_refused_where_it_is_wrong() {
    let failures = check_corpus("tests/malformed/policy", |f| vec!["check".into(), f.into()]);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_malformed_scenario_is_refused_where_it_is_wrong() {
    let failures = check_corpus("tests/malformed/scenario", |f| {
        vec!["simulate".into(), f.into()]
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn corpus_covers_at_least_sixty_defects() {
    let n = files("tests/malformed/policy").len() + files("tests/malformed/scenario").len();
    assert!(n >= 60, "{n} files");
}

/// Runs `andon ARGS` and returns its exit code and its peak resident memory (KiB), from
/// the kernel's own accounting (wait4's rusage), not a sample.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives the rusage
fn peak_rss(args: &[&str]) -> (i32, i64) {
    let child = Command::new(env!("CARGO_BIN_EXE_andon"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills; the pid is our own child's.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss)
}

/// The largest inputs a check can be handed: over the size cap, the largest allowed file
/// of the worst shapes (deep nesting, thousands of entries, a 200,000-character name).
/// Each is refused (exit 2) in under 100 MB. Before the size cap and the bounded index, a
/// 10 MB file cost 1.1 GB.
#[test]
fn the_largest_inputs_stay_under_100_mb() {
    let dir = std::env::temp_dir().join(format!("andon-largest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big_yaml = |n: usize| -> String {
        let mut s = String::from("services:\n");
        let mut i = 0;
        while s.len() < n {
            s += &format!("  - {{name: svc{i}, min_replicas: 1, max_replicas: 2000000}}\n");
            i += 1;
        }
        s
    };
    let cases: Vec<(&str, String)> = vec![
        ("over-the-cap.yaml", big_yaml(10 * 1024 * 1024)),
        ("many-entries.yaml", big_yaml(250 * 1024)),
        (
            "deep-flow.yaml",
            format!("services: {}", "[".repeat(250_000)),
        ),
        (
            "deep-block.yaml",
            (1..600)
                .map(|i| format!("{}k{i}:\n", "  ".repeat(i % 200)))
                .collect::<String>(),
        ),
        (
            "huge-name.yaml",
            std::fs::read_to_string("tests/malformed/policy/huge-service-name.yaml").unwrap(),
        ),
    ];
    for (name, text) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let p = path.display().to_string();
        for args in [vec!["check", p.as_str()], vec!["simulate", p.as_str()]] {
            let (code, kib) = peak_rss(&args);
            assert_eq!(code, 2, "{args:?}");
            assert!(kib < 100 * 1024, "{args:?}: peak RSS {kib} KiB");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
