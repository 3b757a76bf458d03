//! `runner bootstrap aws://ACCOUNT/REGION --trust ACCOUNT`: the bootstrap stack, deployed as a one-step pipeline
//! through the run API (preflight included: refused when the credentials act in another account).

use std::path::Path;
use std::process::ExitCode;

use runner::run::RunRequest;

use crate::cli::BootstrapArgs;

pub fn main(args: BootstrapArgs, state_dir: &Path) -> Result<ExitCode, String> {
    let b = steps::bootstrap::Bootstrap::new(
        &args.environment,
        args.trust,
        args.role,
        args.qualifier,
        args.execution_policy,
    )
    .map_err(|e| format!("error: {e}\n"))?;
    let dir = state_dir.join("bootstrap");
    std::fs::create_dir_all(&dir).map_err(|e| format!("error: cannot create {}: {e}\n", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("error: {}: {e}\n", dir.display()))?;
    let template = dir.join(format!("{}-{}.yaml", steps::bootstrap::STACK_NAME, b.qualifier));
    std::fs::write(&template, steps::bootstrap::TEMPLATE)
        .map_err(|e| format!("error: cannot write {}: {e}\n", template.display()))?;
    let text = b.pipeline(&template);
    let file = dir.join("bootstrap.ron");
    std::fs::write(&file, &text).map_err(|e| format!("error: cannot write {}: {e}\n", file.display()))?;
    let loaded = engine::load::parse(&file, text).map_err(|e| e.render())?;
    let planned = runner::pipeline::plan_loaded_for(loaded, &[], runner::pipeline::Purpose::Run)?;
    eprintln!(
        "bootstrap: aws://{}/{} (qualifier {}), trusting {}, acting as {}",
        b.account,
        b.region,
        b.qualifier,
        b.trust.join(", "),
        b.role.as_deref().unwrap_or("the caller's credentials")
    );
    let mut request = RunRequest::new(planned, file, state_dir.to_path_buf());
    request.preflight_remedy = Some(match &b.role {
        None => format!(
            "nothing ran: bootstrap acts with the caller's credentials, which must act in account {a}\n  hint: pass \
             --role ARN, a role in account {a} these credentials may assume (in an AWS Organization, e.g. \
             arn:aws:iam::{a}:role/OrganizationAccountAccessRole), or run with credentials of account {a}",
            a = b.account
        ),
        Some(role) => format!(
            "nothing ran: bootstrap cannot act in account {} through role {role} (fix the access above and run again)",
            b.account
        ),
    });
    let end = super::run::execute(request, args.output, None)?;
    Ok(ExitCode::from(end.exit_code()))
}
