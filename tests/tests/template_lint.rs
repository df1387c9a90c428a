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

/// The template as JSON, read by cfn-lint's own decoder (which knows the short forms such as `!Ref`).
fn template_json() -> Result<serde_json::Value, String> {
    let python = pytools::tool("python")?;
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/template.yaml");
    let script = "import json, sys\nfrom cfnlint.decode import decode\ntemplate, matches = decode(sys.argv[1])\nassert not matches, matches\nprint(json.dumps(template, default=str))\n";
    let output = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&template)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("cfn-lint's decoder printed no JSON: {e}"))
}

#[test]
fn the_template_creates_an_opensearch_domain_by_default_for_the_two_search_roles_only() {
    let template = template_json().unwrap();
    let engine = &template["Parameters"]["SearchEngine"];
    assert_eq!(engine["Default"], "opensearch-domain");
    let choices: Vec<&str> = engine["AllowedValues"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        choices,
        ["opensearch-domain", "opensearch-serverless", "cloudsearch-existing"]
    );

    let resources = &template["Resources"];
    let domain = &resources["SearchDomain"];
    assert_eq!(domain["Type"], "AWS::OpenSearchService::Domain");
    assert_eq!(domain["Condition"], "UseOpenSearchDomain");
    let props = &domain["Properties"];
    assert_eq!(props["ClusterConfig"]["InstanceType"], "t3.small.search");
    assert_eq!(props["ClusterConfig"]["InstanceCount"], 1);
    assert_eq!(props["EBSOptions"]["VolumeType"], "gp3");
    assert_eq!(props["EncryptionAtRestOptions"]["Enabled"], true);
    assert_eq!(props["NodeToNodeEncryptionOptions"]["Enabled"], true);
    assert_eq!(props["DomainEndpointOptions"]["EnforceHTTPS"], true);
    assert!(
        props["DomainEndpointOptions"]["TLSSecurityPolicy"]
            .as_str()
            .unwrap()
            .starts_with("Policy-Min-TLS-1-2"),
    );
    let statements = props["AccessPolicies"]["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "one statement, for the functions' roles");
    let principals = statements[0]["Principal"]["AWS"].to_string();
    for role in ["IndexerRole", "SearchRole"] {
        assert!(principals.contains(role), "{principals}");
    }
    for other in ["ItemsRole", "MessagesRole", "\"*\""] {
        assert!(!principals.contains(other), "{other} in {principals}");
    }
    assert!(
        statements[0]["Action"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.as_str().unwrap().starts_with("es:ESHttp"))
    );

    let collection = &resources["SearchCollection"];
    assert_eq!(collection["Type"], "AWS::OpenSearchServerless::Collection");
    assert_eq!(collection["Properties"]["Type"], "SEARCH");
    for (name, kind) in [
        ("SearchCollectionEncryption", "encryption"),
        ("SearchCollectionNetwork", "network"),
        ("SearchCollectionAccess", "data"),
    ] {
        assert_eq!(resources[name]["Condition"], "UseOpenSearchServerless", "{name}");
        assert_eq!(resources[name]["Properties"]["Type"], kind, "{name}");
    }

    // CloudSearch is only ever the account's existing domain, and its permissions exist only then.
    for (name, resource) in resources.as_object().unwrap() {
        let text = resource.to_string();
        if text.contains("cloudsearch:") {
            assert_eq!(resource["Condition"], "UseCloudSearch", "{name}");
        }
        if text.contains("\"aoss:") {
            assert_eq!(resource["Condition"], "UseOpenSearchServerless", "{name}");
        }
        if text.contains("\"es:ESHttp") {
            assert_eq!(resource["Condition"], "UseOpenSearchDomain", "{name}");
        }
    }
    // The functions that use the index are told which one; the others get no search variables.
    for function in ["IndexerFunction", "SearchFunction"] {
        let variables = &resources[function]["Properties"]["Environment"]["Variables"];
        assert!(
            variables["ROOKERY_SEARCH"].to_string().contains("opensearch"),
            "{function}"
        );
        assert!(!variables["ROOKERY_OPENSEARCH_ENDPOINT"].is_null(), "{function}");
    }
    assert!(!template["Globals"].to_string().contains("ROOKERY_SEARCH"));
}

#[test]
fn the_eraser_consumes_only_marker_inserts_and_may_do_only_what_erasure_needs() {
    let template = template_json().unwrap();
    let resources = &template["Resources"];
    let eraser = &resources["EraserFunction"]["Properties"];
    let markers = &eraser["Events"]["Markers"]["Properties"];
    assert_eq!(
        markers["FunctionResponseTypes"],
        serde_json::json!(["ReportBatchItemFailures"])
    );
    let pattern = markers["FilterCriteria"]["Filters"][0]["Pattern"].as_str().unwrap();
    let pattern: serde_json::Value = serde_json::from_str(pattern).unwrap();
    assert_eq!(pattern["eventName"], serde_json::json!(["INSERT"]));
    assert_eq!(
        pattern["dynamodb"]["NewImage"]["kind"]["S"],
        serde_json::json!(["erased"])
    );
    assert!(eraser["Timeout"].as_u64().unwrap() <= 900);

    let statements = resources["EraserRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    let mut actions: Vec<String> = statements
        .iter()
        .flat_map(|s| match &s["Action"] {
            serde_json::Value::Array(list) => list.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
            one => vec![one.as_str().unwrap().to_owned()],
        })
        .collect();
    actions.sort();
    let expected = [
        "cognito-idp:AdminDeleteUser",
        "cognito-idp:ListUsers",
        "dynamodb:BatchWriteItem",
        "dynamodb:DescribeStream",
        "dynamodb:GetItem",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
        "dynamodb:Query",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:DeleteObject",
        "s3:ListBucket",
        "sns:DeleteEndpoint",
        "sns:GetEndpointAttributes",
        "sqs:SendMessage",
    ];
    assert_eq!(actions, expected);
    // The items function writes the marker; it cannot delete from the search engine, the bucket, SNS or Cognito.
    let items = resources["ItemsRole"].to_string();
    for action in [
        "s3:DeleteObject",
        "sns:DeleteEndpoint",
        "cognito-idp:",
        "es:ESHttp",
        "aoss:",
        "BatchWriteItem",
    ] {
        assert!(!items.contains(action), "{action} in the items role");
    }
}
