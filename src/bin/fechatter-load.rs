//! `fechatter-load`: thin — parse the command line, then hand over to `fechatter::load`.

use std::process::ExitCode;

use clap::Parser;

use fechatter::load::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Many connections need many file descriptors.
    fechatter::app::raise_fd_limit();
    let result = match cli.command {
        Command::BaselineServer(a) => actix_web::rt::System::new()
            .block_on(fechatter::load::baseline::serve(&a))
            .map(|()| ExitCode::SUCCESS),
        command => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(fechatter::load::run(command))),
    };
    result.unwrap_or_else(|e| {
        eprintln!("fechatter-load: {e:#}");
        ExitCode::from(2)
    })
}
