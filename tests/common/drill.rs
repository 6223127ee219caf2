//! Runs `andon drill` on a scenario given as text, against one target; shared by the
//! test files that drive the drill against fakes and stand-ins (`#[path]`-included).

use std::process::Command;

/// The drill's exit code and its JSON result.
pub fn drill(target: &str, scenario: &str) -> (i32, serde_json::Value) {
    drill_with(target, scenario, &[])
}

/// As `drill`, with more arguments.
pub fn drill_with(target: &str, scenario: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!(
        "andon-drill-{}-{}",
        std::process::id(),
        target.replace([':', '.', '/'], "-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let sc = dir.join("scenario.yaml");
    std::fs::write(&sc, scenario).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_andon"))
        .args(["drill", sc.to_str().unwrap(), "--target", target, "--json"])
        .args(extra)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}
