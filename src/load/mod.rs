//! `fechatter-load`, the load generator (its binary is `src/bin/fechatter-load.rs`): proves the
//! server holds many connections, fans out fast and loses nothing. Traffic goes only to
//! loopback. See BENCHMARKS.md for the commands and figures.
//!
//! # Layout
//! - [`args`]: the command line, every knob. [`target`]: the loopback server and source addresses.
//! - [`api`]: a thin REST client. [`setup`]: users, workspace and rooms, reusable (`--reuse`).
//! - [`wsclient`]: WebSocket clients: connect, authenticate, read into the checker.
//! - [`checker`]: the delivery checker (lost, duplicated, out of order) — pure.
//! - [`latency`]: HDR histograms. [`report`]: JSON summary and tables. [`progress`]: bars.
//!   [`rss`]: a process's resident memory.
//! - [`shard`]: `--shard I/N` digests and `merge` (several load processes, one scenario);
//!   [`connect_merge`]: `merge` of several `connect` processes.
//! - Scenarios: [`connect`], [`chat`], [`ramp`] (chat at rising rates: the knee), [`fanout`],
//!   [`httpmix`] (`http`); [`baseline`]: the
//!   plain broadcast server fan-out is compared with; [`nats`]: the NATS server's WebSocket
//!   listener, the broker baseline (`fanout --nats-ws-url`).
//! - The fault suite: [`fault`] (harness and scenarios), [`fault_client`] (clients that retry
//!   and resume, moving to the next server of several), [`fault_meili`] (Meilisearch killed
//!   and restarted under load), [`fault_cluster`] (`cluster-kill9`: three nodes, one Redis
//!   ([`redis_proc`]), one killed per cycle); [`cluster_up`] holds such a cluster up for the
//!   cluster benchmarks.

pub mod api;
pub mod args;
pub mod baseline;
pub mod chat;
pub mod checker;
pub mod cluster_up;
pub mod connect;
pub mod connect_merge;
pub mod fanout;
pub mod fault;
pub mod fault_client;
pub mod fault_cluster;
pub mod fault_meili;
pub mod httpmix;
pub mod latency;
pub mod nats;
pub mod progress;
pub mod ramp;
pub mod redis_proc;
pub mod report;
pub mod rss;
pub mod setup;
pub mod shard;
pub mod target;
pub mod wsclient;

use std::process::ExitCode;

use args::{Command, Common};

/// Runs a client scenario (every command but `baseline-server`); exit code 1 when a delivery
/// check failed.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let clean = match command {
        Command::Connect(a) => {
            let s = connect::run(&a).await?;
            finish(&a.common, &s, || connect::print(&s))?;
            true
        }
        Command::Chat(a) => {
            let s = chat::run(&a).await?;
            finish(&a.common, &s, || chat::print(&s))?;
            s.clean
        }
        Command::Fanout(a) => {
            let s = fanout::run(&a).await?;
            finish(&a.common, &s, || fanout::print(&s))?;
            s.clean
        }
        Command::Merge(a) => match a.files.first() {
            Some(first) if connect_merge::is_connect(first)? => {
                let s = connect_merge::merge(&a)?;
                connect_merge::print(&s);
                true
            }
            _ => {
                let s = shard::merge(&a)?;
                chat::print(&s);
                s.clean
            }
        },
        Command::Ramp(a) => {
            // `ramp` writes its own JSON (the per-step chat runs must not).
            let s = ramp::run(&a).await?;
            ramp::print(&s);
            s.clean
        }
        Command::Fault(a) => fault::run(&a).await?,
        Command::ClusterUp(a) => {
            cluster_up::run(&a).await?;
            true
        }
        Command::Http(a) => {
            let s = httpmix::run(&a).await?;
            finish(&a.common, &s, || httpmix::print(&s))?;
            true
        }
        Command::BaselineServer(_) => anyhow::bail!("baseline-server runs on its own runtime"),
    };
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn finish(
    common: &Common,
    summary: &impl serde::Serialize,
    print: impl FnOnce(),
) -> anyhow::Result<()> {
    print();
    if let Some(path) = &common.json {
        report::write_json(path, summary)?;
    }
    Ok(())
}
