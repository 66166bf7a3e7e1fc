//! The `fechatter` binary: thin — parse the command line, then hand over to the library.

use clap::{Parser, Subcommand};

use fechatter::config::Config;

#[derive(Parser)]
#[command(
    name = "fechatter",
    version,
    about = "Fechatter: a real-time chat server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded PostgreSQL unless DATABASE_URL is set).
    Serve(Box<Config>),
    /// Rebuild the search index from PostgreSQL.
    Reindex(Box<Config>),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => fechatter::cli::serve(*config),
        Command::Reindex(config) => fechatter::cli::reindex(*config),
    };
    if let Err(e) = result {
        eprintln!("fechatter: {e:#}");
        std::process::exit(1);
    }
}
