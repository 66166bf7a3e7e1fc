//! `kill -9` of one cluster node under load (`fechatter-load fault cluster-kill9 --quick`):
//! three real server processes on one PostgreSQL and one Redis, one node killed and restarted
//! per cycle; its clients move to the other nodes and resume. Nothing acknowledged may be lost,
//! duplicated or reordered, and every chat's stored positions stay 1..=last_seq. The
//! self-check runs the same with readers that do not resume, and must see losses.

use fechatter::load::args::{Cli, Command};
use fechatter::load::fault::{Report, run_reports};

async fn run(extra: &[&str]) -> Report {
    use clap::Parser;
    let mut argv = vec![
        "fechatter-load",
        "fault",
        "cluster-kill9",
        "--quick",
        "--server-bin",
        env!("CARGO_BIN_EXE_fechatter"),
    ];
    argv.extend_from_slice(extra);
    let cli = Cli::try_parse_from(argv).expect("fault arguments");
    let Command::Fault(args) = cli.command else {
        panic!("not the fault command");
    };
    let mut reports = run_reports(&args).await.expect("the scenario ran");
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_cluster_node_under_load_loses_nothing() {
    let r = run(&[]).await;
    assert!(
        r.clean,
        "cluster-kill9 failed: {:?} {}",
        r.failures, r.figures
    );
    assert!(
        r.figures["acknowledged"].as_u64() > Some(0),
        "{}",
        r.figures
    );
    assert!(r.figures["resumes"].as_u64() >= Some(2), "{}", r.figures);
}

/// Without resuming, the readers of a killed node miss what was sent while they moved: the
/// checker must count it (the clean run above is not clean by accident).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_kill9_checker_counts_losses() {
    let r = run(&["--no-resume", "--cycles", "1"]).await;
    assert!(!r.clean, "a run without resuming was clean: {}", r.figures);
    assert!(r.figures["lost"].as_u64() > Some(0), "{}", r.figures);
}
