//! Whatever the input, `check` and the scenario loader answer with errors, never a panic.

use proptest::prelude::*;

const POLICY: &str = include_str!("../policies/erlmcp-tps.yaml");
const SCENARIO: &str = include_str!("../chaos/connection-flood.yaml");

/// Mutations that keep text close to valid YAML, where the interesting bugs live.
fn mutate(base: &str, ops: &[(usize, u8, u8)]) -> String {
    let mut bytes = base.as_bytes().to_vec();
    for &(pos, op, b) in ops {
        if bytes.is_empty() {
            break;
        }
        let i = pos % bytes.len();
        match op % 4 {
            0 => {
                const SET: &[u8] = b"0-9:.{}[]-, x\n%ms\"'&*!|>#";
                bytes[i] = SET[b as usize % SET.len()];
            }
            1 => {
                bytes.remove(i);
            }
            2 => {
                const SET: &[u8] = b"-1e309 NaN.inf";
                bytes.insert(i, SET[b as usize % SET.len()]);
            }
            _ => {
                // Delete a line.
                let start = bytes[..i]
                    .iter()
                    .rposition(|c| *c == b'\n')
                    .map_or(0, |p| p + 1);
                let end = bytes[i..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(bytes.len(), |p| i + p);
                bytes.drain(start..end);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn policy_check_never_panics(ops in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let text = mutate(POLICY, &ops);
        if let Err(e) = andon::policy::validate::from_str("p.yaml", &text) {
            let lines = text.lines().count() + 1;
            for err in &e.0 {
                prop_assert!(err.pos.line >= 1 && err.pos.line <= lines, "{err}");
                prop_assert!(!err.message.is_empty() && err.to_string().len() < 1000, "{err}");
            }
        }
    }

    #[test]
    fn scenario_load_never_panics(ops in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let text = mutate(SCENARIO, &ops);
        if let Err(e) = andon::scenario::from_str("s.yaml", &text) {
            let lines = text.lines().count() + 1;
            for err in &e.0 {
                prop_assert!(err.pos.line >= 1 && err.pos.line <= lines, "{err}");
                prop_assert!(!err.message.is_empty() && err.to_string().len() < 1000, "{err}");
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = andon::policy::validate::from_str("p.yaml", &text);
        let _ = andon::scenario::from_str("s.yaml", &text);
    }
}
