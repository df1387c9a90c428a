//! The deployment template passes cfn-lint, the version pinned in `tests/requirements.txt`, so a template
//! that CloudFormation would reject fails the test command rather than a deployment.

use std::path::Path;
use std::process::Command;

use rookery_tests::pytools;

#[test]
fn the_deployment_template_passes_cfn_lint() {
    let cfn_lint = pytools::tool("cfn-lint").unwrap_or_else(|why| panic!("{why}"));
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/template.yaml");
    let output = Command::new(&cfn_lint).arg(&template).output().unwrap();
    assert!(
        output.status.success(),
        "cfn-lint {} found problems ({}):\n{}{}",
        template.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
