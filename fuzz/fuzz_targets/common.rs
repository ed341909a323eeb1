//! Checks shared by the config targets: whatever the input, `process`
//! returns (never panics), and every error it reports reads as
//! `fuzz.yaml:line:col: message` with a position inside the file.

use reconciler::config::{ConfigError, FileDesired, Objects, ReadRules, Timings, process};

/// The file name errors must carry.
pub const FILE: &str = "fuzz.yaml";

/// Runs parse + schema + resolve + encode on `bytes` and checks the outcome.
pub fn check(bytes: &[u8]) -> Result<FileDesired, Vec<ConfigError>> {
    let rules = ReadRules {
        max_size: 1 << 20,
        strict_permissions: true,
    };
    let run = || {
        process(
            FILE,
            FILE,
            bytes,
            &mut Objects::default(),
            &rules,
            &mut Timings::default(),
        )
    };
    let result = run();
    // Deterministic: the same bytes give the same outcome.
    let again = run();
    assert_eq!(summary(&result), summary(&again), "nondeterministic");
    // Lines as YAML counts them: "\n", "\r\n" or a lone "\r" ends one.
    let lines = bytes
        .iter()
        .filter(|b| **b == b'\n' || **b == b'\r')
        .count()
        - bytes.windows(2).filter(|w| w == b"\r\n").count()
        + 1;
    match &result {
        Ok(fd) => {
            for (key, f) in &fd.functions {
                assert!(
                    !f.name.is_empty() && f.name.len() <= 32,
                    "{key}: {:?}",
                    f.name
                );
                assert!(
                    (1..=1000).contains(&f.priority),
                    "{}: priority {}",
                    f.name,
                    f.priority
                );
                for (name, m) in &f.maps {
                    let shape = m.inner.unwrap_or(m.shape);
                    assert_eq!(m.entries.key_size(), shape.key_size as usize, "{name}");
                    assert_eq!(m.entries.value_size(), shape.value_size as usize, "{name}");
                    assert!(
                        shape.is_array() || m.entries.len() <= shape.max_entries as usize,
                        "{name}: {} entries",
                        m.entries.len()
                    );
                }
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error without errors");
            for e in errors {
                let text = e.to_string();
                assert!(text.starts_with(FILE), "{text}");
                assert!(!text.contains('\n'), "a multi-line message: {text:?}");
                if let Some(m) = e.mark {
                    assert!(m.line >= 1 && m.col >= 1, "{text}");
                    assert!(
                        m.line as usize <= lines,
                        "{text}: past the last line {lines}"
                    );
                }
            }
        }
    }
    result
}

fn summary(r: &Result<FileDesired, Vec<ConfigError>>) -> String {
    match r {
        Ok(fd) => format!(
            "{} chains {} functions",
            fd.chains.len(),
            fd.functions.len()
        ),
        Err(e) => e
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}
