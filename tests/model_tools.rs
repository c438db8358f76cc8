//! The reference model's Python tools (`model/mouthmap_model`): their unit
//! tests (`model/tests`, the parts that need only numpy and ONNX: decoding
//! and error rates, CTC beam search, the split and alignments, where errors
//! sit, the bootstrap behind `compare`, the comparisons `release` makes) run
//! with the interop Python `scripts/install-deps` makes, so the figures the
//! model card quotes are computed by tested code. Training itself needs
//! PyTorch (`model/requirements.txt`, several GB) and is not run here.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn the_model_tools_unit_tests_pass() {
    if !available(&[Need::Interop]) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(interop_python())
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(root.join("model/tests"))
        .arg("-t")
        .arg(root.join("model"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("the interop Python runs");
    let report = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "model/tests failed:\n{report}");
    // A discovery that found nothing also exits 0: count what ran.
    let ran = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 25, "only {ran} model tool tests ran:\n{report}");
}
