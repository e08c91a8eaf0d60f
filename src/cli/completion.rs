//! `ocvault completion SHELL`: the shell completion script, generated from the clap
//! definition so it always knows every command and option of this build.

use super::Outcome;
use clap::CommandFactory;
use ocvault::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// The shell to complete in
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(a: Args) -> Result<Outcome> {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = super::Cli::command();
    clap_complete::generate(shell, &mut cmd, "ocvault", &mut std::io::stdout());
    Ok(Outcome::Success)
}
