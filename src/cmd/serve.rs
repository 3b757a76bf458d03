//! `runner serve FILE...`: continuous delivery with a web dashboard. Parses the options, starts a runtime, and
//! hands the rest to the library's server ([`runner::serve`]); SIGINT or SIGTERM stop it (runs in progress are
//! stopped as Ctrl-C stops `runner run`).

use std::path::Path;
use std::process::ExitCode;

use runner::serve::{self, ServeOptions};

use crate::cli::ServeArgs;

pub fn main(args: ServeArgs, state_dir: &Path) -> Result<ExitCode, String> {
    let parse = |flag: &str, value: &Option<String>| {
        value.as_deref().map(serve::parse_secret).transpose().map_err(|e| format!("error: {flag}: {e}\n"))
    };
    let options = ServeOptions {
        files: args.files,
        listen: args.listen,
        poll: args.poll.into(),
        max_runs: args.max_runs,
        state_dir: state_dir.to_path_buf(),
        token: parse("--token", &args.token)?,
        webhook_secret: parse("--webhook-secret", &args.webhook_secret)?,
        private: args.private,
        public_url: args.public_url,
    };
    if options.poll.is_zero() {
        return Err("error: --poll must be longer than 0s\n".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("error: cannot start the async runtime: {e}\n"))?;
    runtime.block_on(serve::serve(options, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// The first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("runner serve: stopping (runs in progress are interrupted)");
}
