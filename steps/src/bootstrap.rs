//! `runner bootstrap aws://ACCOUNT/REGION --trust DEPLOYMENT_ACCOUNT`: the CDK-compatible bootstrap stack
//! (`bootstrap.yaml`, shipped in the binary), deployed by the Deploy step's own machinery as a one-step pipeline.

/// The bootstrap template.
pub const TEMPLATE: &str = include_str!("bootstrap.yaml");
/// The stack's name, as `cdk bootstrap` names it.
pub const STACK_NAME: &str = "CDKToolkit";
/// The version the stack writes to `/cdk-bootstrap/{qualifier}/version`.
pub const VERSION: u32 = 21;

/// What to bootstrap, and who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub account: String,
    pub region: String,
    /// Accounts trusted to publish and deploy (the deployment account).
    pub trust: Vec<String>,
    /// A role to act through in the account; `None`: the caller's credentials (which must act in it).
    pub role: Option<String>,
    pub qualifier: String,
    /// Managed policies of the CloudFormation execution role.
    pub execution_policies: Vec<String>,
}

fn account_id(s: &str) -> bool {
    s.len() == 12 && s.chars().all(|c| c.is_ascii_digit())
}

impl Bootstrap {
    /// Check the arguments of `runner bootstrap`.
    pub fn new(
        environment: &str,
        trust: Vec<String>,
        role: Option<String>,
        qualifier: Option<String>,
        execution_policies: Vec<String>,
    ) -> Result<Bootstrap, String> {
        let (account, region) = environment
            .strip_prefix("aws://")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(|| format!("`{environment}` is not an environment: write aws://ACCOUNT/REGION"))?;
        if !account_id(account) {
            return Err(format!("account `{account}` in `{environment}` is not a 12-digit AWS account id"));
        }
        let region_ok =
            !region.is_empty() && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            return Err(format!("region `{region}` in `{environment}` is not an AWS region name"));
        }
        if trust.is_empty() {
            return Err("name the deployment account with --trust ACCOUNT".into());
        }
        if let Some(bad) = trust.iter().find(|t| !account_id(t)) {
            return Err(format!("--trust `{bad}` is not a 12-digit AWS account id"));
        }
        let qualifier = qualifier.unwrap_or_else(|| crate::aws::DEFAULT_QUALIFIER.to_string());
        if qualifier.is_empty()
            || qualifier.len() > 10
            || !qualifier.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("qualifier `{qualifier}` must be 1 to 10 letters, digits, `-` or `_`"));
        }
        if let Some(r) = &role {
            if !r.starts_with("arn:") {
                return Err(format!("--role `{r}` is not an ARN"));
            }
        }
        let execution_policies = if execution_policies.is_empty() {
            vec![crate::aws::managed_policy_arn(region, "AdministratorAccess")]
        } else {
            execution_policies
        };
        Ok(Bootstrap {
            account: account.to_string(),
            region: region.to_string(),
            trust,
            role,
            qualifier,
            execution_policies,
        })
    }

    /// The one-step pipeline (RON) that deploys the bootstrap stack from `template` (an absolute path).
    pub fn pipeline(&self, template: &std::path::Path) -> String {
        let role = match &self.role {
            Some(r) => format!("Arn({r:?})"),
            None => "Caller".to_string(),
        };
        format!(
            r#"Pipeline(name: "bootstrap", steps: [
    Step(
        id: "bootstrap-{account}-{region}",
        kind: Deploy(
            account: {account:?},
            region: {region:?},
            role: {role},
            qualifier: {qualifier:?},
            stacks: Listed([(
                name: "{STACK_NAME}",
                template: {template:?},
                parameters: {{
                    "Qualifier": {qualifier:?},
                    "TrustedAccounts": {trust:?},
                    "CloudFormationExecutionPolicies": {policies:?},
                    "BootstrapVersion": "{VERSION}",
                }},
                capabilities: ["CAPABILITY_NAMED_IAM"],
            )]),
        ),
    ),
])
"#,
            account = self.account,
            region = self.region,
            qualifier = self.qualifier,
            template = template.display().to_string(),
            trust = self.trust.join(","),
            policies = self.execution_policies.join(","),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_arguments_are_checked_with_clear_messages() {
        let ok =
            Bootstrap::new("aws://111111111111/us-east-1", vec!["999999999999".into()], None, None, vec![]).unwrap();
        assert_eq!(ok.qualifier, "hnb659fds");
        assert_eq!(ok.execution_policies, ["arn:aws:iam::aws:policy/AdministratorAccess"]);
        let china =
            Bootstrap::new("aws://111111111111/cn-north-1", vec!["999999999999".into()], None, None, vec![]).unwrap();
        assert_eq!(china.execution_policies, ["arn:aws-cn:iam::aws:policy/AdministratorAccess"]);
        let err = |env: &str, trust: Vec<String>| Bootstrap::new(env, trust, None, None, vec![]).unwrap_err();
        assert!(err("111111111111/us-east-1", vec!["999999999999".into()]).contains("write aws://ACCOUNT/REGION"));
        assert!(err("aws://1111/us-east-1", vec!["999999999999".into()]).contains("not a 12-digit"));
        assert!(err("aws://111111111111/us-east-1", vec![]).contains("--trust"));
        assert!(err("aws://111111111111/us-east-1", vec!["x".into()]).contains("--trust `x`"));
    }

    #[test]
    fn the_bootstrap_pipeline_parses_and_the_template_fits_in_a_request_body() {
        let b = Bootstrap::new(
            "aws://111111111111/us-east-1",
            vec!["999999999999".into(), "888888888888".into()],
            Some("arn:aws:iam::111111111111:role/OrganizationAccountAccessRole".into()),
            Some("abc".into()),
            vec![],
        )
        .unwrap();
        let text = b.pipeline(std::path::Path::new("/tmp/x/bootstrap.yaml"));
        let loaded = engine::load::parse(std::path::Path::new("bootstrap.ron"), text).unwrap();
        let engine::model::StepKind::Deploy(spec) = &loaded.pipeline.steps[0].kind else { panic!() };
        let engine::model::Stacks::Listed(stacks) = &spec.stacks else { panic!() };
        assert_eq!(stacks[0].parameters["TrustedAccounts"], "999999999999,888888888888");
        assert_eq!(spec.qualifier.as_deref(), Some("abc"));
        assert!(TEMPLATE.len() < crate::deploy::TEMPLATE_BODY_LIMIT);
        for name in [
            "cdk-${Qualifier}-assets-${AWS::AccountId}-${AWS::Region}",
            "cdk-${Qualifier}-deploy-role-${AWS::AccountId}-${AWS::Region}",
            "cdk-${Qualifier}-file-publishing-role-${AWS::AccountId}-${AWS::Region}",
            "cdk-${Qualifier}-cfn-exec-role-${AWS::AccountId}-${AWS::Region}",
            "/cdk-bootstrap/${Qualifier}/version",
        ] {
            assert!(TEMPLATE.contains(name), "{name}");
        }
    }
}
