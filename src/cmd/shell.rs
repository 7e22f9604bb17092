//! `pgswarm completions SHELL` and `pgswarm man [COMMAND]`: what a shell and `man` need, printed by
//! the binary itself from the same clap definitions that parse the command line, so they can never
//! disagree with it and need no build step or files beside the binary (clap_complete,
//! clap_mangen: the clap project's own generators).

use crate::cmd::cli::{Cli, CompletionsArgs, ManArgs};
use crate::cmd::{emit, CmdError, Exit};
use clap::CommandFactory;

/// Prints the completion script for `args.shell`.
pub fn print_completions(args: &CompletionsArgs) -> Result<Exit, CmdError> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "pgswarm", &mut out);
    emit(&String::from_utf8_lossy(&out));
    Ok(Exit::Ok)
}

/// Prints pgswarm(1), or pgswarm-COMMAND(1); an unknown command is a usage error naming it.
pub fn print_man(args: &ManArgs) -> Result<Exit, CmdError> {
    let mut cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    // Global options (--db, --config, ...) reach the subcommands' pages only once built.
    cmd.build();
    let page = match &args.command {
        None => cmd,
        Some(name) => {
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            let Some(sub) = cmd.find_subcommand(name) else {
                return Err(CmdError::Usage(format!(
                    "no command {name:?}: use one of {}",
                    names.join(", ")
                )));
            };
            sub.clone()
                .display_name(format!("pgswarm-{name}"))
                .bin_name(format!("pgswarm {name}"))
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    render(page)
}

fn render(page: clap::Command) -> Result<Exit, CmdError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| CmdError::Io(format!("cannot render the manual page: {e}")))?;
    emit(&String::from_utf8_lossy(&out));
    Ok(Exit::Ok)
}
