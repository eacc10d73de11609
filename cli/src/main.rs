//! `kubectl-chop`: the thin binary over [`kubectl_chop`]. Installed on the PATH,
//! kubectl runs it as `kubectl chop ...`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kubectl_chop::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "error: {:#}",
                anyhow::Error::new(e).context("starting the runtime")
            );
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(kubectl_chop::run(cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
