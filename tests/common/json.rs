//! The one parser of `--json` output.

use std::process::Output;

/// What a finished command printed: a `std::process::Output` or an `assert_cmd` assertion.
pub trait Printed {
    fn printed(&self) -> &Output;
}

impl Printed for Output {
    fn printed(&self) -> &Output {
        self
    }
}

impl Printed for assert_cmd::assert::Assert {
    fn printed(&self) -> &Output {
        self.get_output()
    }
}

/// The last non-empty line of standard output as JSON: `--json` commands print one document,
/// last. Panics with both output streams when it is not JSON.
pub fn last_json(out: &impl Printed) -> serde_json::Value {
    let out = out.printed();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    serde_json::from_str(line.unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {text:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
